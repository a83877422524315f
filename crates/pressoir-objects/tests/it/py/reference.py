import boto3

s3 = boto3.client(
    's3',
    endpoint_url='http://s3.localhost:30080',
    aws_access_key_id='minioadmin',
    aws_secret_access_key='<minio_password>'
)

# Upload
s3.upload_file('backup.sql', 'backups', 'backup.sql')

# Download
s3.download_file('backups', 'backup.sql', 'local_backup.sql')

# List
response = s3.list_objects_v2(Bucket='backups')
for obj in response.get('Contents', []):
    print(obj['Key'])
