"""Adds a SCRAM-SHA-256 user to a Kafka broker, with Confluent's official Python client.

Usage: kafka_scram.py BOOTSTRAP USER PASSWORD

It logs in with SASL PLAIN as `admin` (the tests' tansu broker takes any PLAIN login) and
upserts the user's SCRAM credential (AlterUserScramCredentials).
"""

import sys

from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

bootstrap, user, password = sys.argv[1:4]
admin = AdminClient(
    {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "admin",
        "sasl.password": "admin",
    }
)
info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
upsertion = UserScramCredentialUpsertion(user, info, password.encode())
for name, done in admin.alter_user_scram_credentials([upsertion]).items():
    done.result(timeout=30)
print(f"SCRAM-SHA-256 credential set for {user}")
