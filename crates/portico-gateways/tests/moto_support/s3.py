"""What the artifact tests do to S3 and SQS, with boto3 against a moto server.

    s3.py ENDPOINT setup BUCKET QUEUE VISIBILITY   makes the queue (that visibility timeout, in
                                                   seconds) and the bucket, and points the
                                                   bucket's notifications at the queue; prints
                                                   the queue's URL
    s3.py ENDPOINT queue QUEUE VISIBILITY          makes the queue only; prints its URL
    s3.py ENDPOINT put BUCKET KEY...               puts one small object per key
    s3.py ENDPOINT count QUEUE_URL                 prints the messages in the queue:
                                                   visible and in flight
"""

import sys

import boto3


def main():
    endpoint, command, *args = sys.argv[1:]
    kw = dict(
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="portico-test",
        aws_secret_access_key="portico-test-secret",
    )
    s3 = boto3.client("s3", **kw)
    sqs = boto3.client("sqs", **kw)
    if command in ("setup", "queue"):
        if command == "setup":
            bucket, queue, visibility = args
        else:
            queue, visibility = args
        url = sqs.create_queue(
            QueueName=queue, Attributes={"VisibilityTimeout": visibility}
        )["QueueUrl"]
        if command == "setup":
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_notification_configuration(
                Bucket=bucket,
                NotificationConfiguration={
                    "QueueConfigurations": [
                        {
                            "QueueArn": arn,
                            "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                        }
                    ]
                },
            )
        print(url)
    elif command == "put":
        bucket, *keys = args
        for key in keys:
            s3.put_object(Bucket=bucket, Key=key, Body=b"portico")
    elif command == "count":
        (url,) = args
        a = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        print(
            a["ApproximateNumberOfMessages"],
            a["ApproximateNumberOfMessagesNotVisible"],
        )
    else:
        sys.exit(f"unknown command {command}")


main()
