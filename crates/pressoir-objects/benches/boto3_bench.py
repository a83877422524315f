"""boto3 figures for the objects benchmark (driven by benches/objects.rs, or run by hand).

usage: boto3_bench.py ENDPOINT ACCESS_KEY SECRET_KEY BUCKET WORK_DIR [SECONDS] [MIB]
Prints one JSON object: 4 KiB PUT and GET ops/s on one thread, and upload_file /
download_file MiB/s for a file of MIB MiB (boto3's default transfer settings; MIB 0 skips them).

`--ensure-moto` instead installs moto[server] into this interpreter's environment when it
is missing, and prints the path of its moto_server entry point.
"""
import json, os, subprocess, sys, time

if sys.argv[1:2] == ["--ensure-moto"]:
    try:
        import moto  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "moto[server]==5.2.*"])
    print(os.path.join(os.path.dirname(sys.executable), "moto_server"))
    sys.exit(0)

import boto3
from boto3.s3.transfer import TransferConfig

endpoint, ak, sk, bucket, work = sys.argv[1:6]
seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 3.0
mib = int(sys.argv[7]) if len(sys.argv) > 7 else 256
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1")
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.ClientError:
    pass

body = os.urandom(4096)
for i in range(20):  # warm up the connection pool
    s3.put_object(Bucket=bucket, Key="warm/%d" % i, Body=body)
    s3.get_object(Bucket=bucket, Key="warm/%d" % i)["Body"].read()

def rate(fn):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(n)
        n += 1
    return n / (time.perf_counter() - t0), n

put_rate, n_put = rate(lambda i: s3.put_object(Bucket=bucket, Key="small/%06d" % i, Body=body))
get_rate, _ = rate(lambda i: s3.get_object(Bucket=bucket, Key="small/%06d" % (i % n_put))["Body"].read())
if mib == 0:  # small objects only (the client ceiling against a null server)
    print(json.dumps({"put_4k": put_rate, "get_4k": get_rate, "upload_mibs": 0, "download_mibs": 0}))
    sys.exit(0)

path = os.path.join(work, "boto3-big.bin")
with open(path, "wb") as f:
    for _ in range(mib):
        f.write(os.urandom(1 << 20))
cfg = TransferConfig()
t0 = time.perf_counter()
s3.upload_file(path, bucket, "big.bin", Config=cfg)
up = mib / (time.perf_counter() - t0)
out = path + ".down"
t0 = time.perf_counter()
s3.download_file(bucket, "big.bin", out, Config=cfg)
down = mib / (time.perf_counter() - t0)
assert os.path.getsize(out) == mib << 20
os.remove(path)
os.remove(out)
print(json.dumps({"put_4k": put_rate, "get_4k": get_rate, "upload_mibs": up, "download_mibs": down}))
