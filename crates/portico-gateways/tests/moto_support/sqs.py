"""What the sqs tests do to SQS, with boto3 against a moto server.

    sqs.py ENDPOINT create QUEUE VISIBILITY   makes the queue (that visibility timeout, in
                                              seconds; a FIFO queue with content-based
                                              deduplication when QUEUE ends with .fifo);
                                              prints its URL
    sqs.py ENDPOINT send QUEUE_URL JSON       sends the messages of JSON, in order: a list of
                                              {"body": TEXT, "group": GROUP (FIFO),
                                               "attributes": {NAME: [DATA_TYPE, VALUE]}}
"""

import json
import sys

import boto3


def main():
    endpoint, command, *args = sys.argv[1:]
    sqs = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="portico-test",
        aws_secret_access_key="portico-test-secret",
    )
    if command == "create":
        queue, visibility = args
        attributes = {"VisibilityTimeout": visibility}
        if queue.endswith(".fifo"):
            attributes["FifoQueue"] = "true"
            attributes["ContentBasedDeduplication"] = "true"
        print(sqs.create_queue(QueueName=queue, Attributes=attributes)["QueueUrl"])
    elif command == "send":
        url, messages = args
        for m in json.loads(messages):
            kw = dict(QueueUrl=url, MessageBody=m["body"])
            if "group" in m:
                kw["MessageGroupId"] = m["group"]
            attributes = m.get("attributes", {})
            if attributes:
                kw["MessageAttributes"] = {
                    name: (
                        {"DataType": kind, "BinaryValue": value.encode()}
                        if kind.startswith("Binary")
                        else {"DataType": kind, "StringValue": value}
                    )
                    for name, (kind, value) in attributes.items()
                }
            sqs.send_message(**kw)
    else:
        sys.exit(f"unknown command {command}")


main()
