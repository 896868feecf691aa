"""What the sns tests do to SNS, with boto3 against a moto server.

    sns.py ENDPOINT topic NAME                     makes the topic; prints its ARN
    sns.py ENDPOINT subscribe TOPIC_ARN URL        subscribes the http(s) URL to the topic;
                                                   prints the subscription's ARN
    sns.py ENDPOINT publish TOPIC_ARN MESSAGE SUBJECT ATTRIBUTES
                                                   publishes MESSAGE with SUBJECT and the
                                                   message attributes of ATTRIBUTES (JSON:
                                                   {NAME: [DATA_TYPE, VALUE]}); prints the
                                                   message's id
"""

import json
import sys

import boto3


def main():
    endpoint, command, *args = sys.argv[1:]
    sns = boto3.client(
        "sns",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="portico-test",
        aws_secret_access_key="portico-test-secret",
    )
    if command == "topic":
        (name,) = args
        print(sns.create_topic(Name=name)["TopicArn"])
    elif command == "subscribe":
        arn, url = args
        protocol = url.split(":", 1)[0]
        print(
            sns.subscribe(TopicArn=arn, Protocol=protocol, Endpoint=url)[
                "SubscriptionArn"
            ]
        )
    elif command == "publish":
        arn, message, subject, attributes = args
        kw = dict(TopicArn=arn, Message=message, Subject=subject)
        attributes = json.loads(attributes)
        if attributes:
            kw["MessageAttributes"] = {
                name: {"DataType": kind, "StringValue": value}
                for name, (kind, value) in attributes.items()
            }
        print(sns.publish(**kw)["MessageId"])
    else:
        sys.exit(f"unknown command {command}")


main()
