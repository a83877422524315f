# boto3 against the server: every operation the issue lists, as a client would call it.
import hashlib, http.client, io, os, sys, time, urllib.parse, urllib.request, urllib.error
import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

EP, AK, SK = os.environ["S3_ENDPOINT"], os.environ["S3_KEY"], os.environ["S3_SECRET"]
s3 = boto3.client("s3", endpoint_url=EP, aws_access_key_id=AK, aws_secret_access_key=SK, region_name="us-east-1")

def raw(method, url, body=None):
    """A bare HTTP request with no default headers (urllib would add a Content-Type)."""
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port)
    c.request(method, u.path + ("?" + u.query if u.query else ""), body=body)
    r = c.getresponse()
    return r.status, r.read()

class Got(tuple):
    """An (error code, HTTP status) pair that says what it was when a comparison fails."""
    def __eq__(self, other):
        ok = tuple.__eq__(self, other)
        if not ok:
            print("got", tuple(self), "expected", other, file=sys.stderr)
        return ok
    def __getitem__(self, i):
        v = tuple.__getitem__(self, i)
        print("got", tuple(self), file=sys.stderr) if i == 0 else None
        return v

def code(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        return Got((e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]))
    raise AssertionError("no error from %s" % fn.__name__)

# Buckets
s3.create_bucket(Bucket="suite")
assert code(s3.create_bucket, Bucket="suite") == ("BucketAlreadyOwnedByYou", 409)
s3.head_bucket(Bucket="suite")
assert code(s3.head_bucket, Bucket="nosuch") == ("404", 404)
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert names == ["backups", "suite"], names
assert s3.get_bucket_location(Bucket="suite").get("LocationConstraint") in (None, "")
assert code(s3.get_object, Bucket="nosuch", Key="k") == ("NoSuchBucket", 404)

# Objects: metadata, content type and cache control round-trip; ETag is the MD5
body = b"hello world" * 100
r = s3.put_object(Bucket="suite", Key="dir/a.txt", Body=body, Metadata={"owner": "me", "note": "x y"},
                  ContentType="text/plain; charset=utf-8", CacheControl="max-age=60",
                  ContentDisposition="attachment", ContentMD5=__import__("base64").b64encode(hashlib.md5(body).digest()).decode())
assert r["ETag"] == '"%s"' % hashlib.md5(body).hexdigest(), r["ETag"]
g = s3.get_object(Bucket="suite", Key="dir/a.txt")
assert g["Body"].read() == body
assert g["Metadata"] == {"owner": "me", "note": "x y"}, g["Metadata"]
assert g["ContentType"] == "text/plain; charset=utf-8"
assert g["CacheControl"] == "max-age=60"
assert g["ContentDisposition"] == "attachment"
h = s3.head_object(Bucket="suite", Key="dir/a.txt")
assert h["ContentLength"] == len(body) and h["Metadata"]["owner"] == "me"
assert code(s3.head_object, Bucket="suite", Key="nope") == ("404", 404)
assert code(s3.get_object, Bucket="suite", Key="nope") == ("NoSuchKey", 404)

# Conditional writes
s3.put_object(Bucket="suite", Key="once", Body=b"1", IfNoneMatch="*")
assert code(s3.put_object, Bucket="suite", Key="once", Body=b"2", IfNoneMatch="*") == ("PreconditionFailed", 412)
assert s3.get_object(Bucket="suite", Key="once")["Body"].read() == b"1"
s3.delete_object(Bucket="suite", Key="once")

# Range
g = s3.get_object(Bucket="suite", Key="dir/a.txt", Range="bytes=6-10")
assert g["Body"].read() == b"world" and g["ContentRange"] == "bytes 6-10/1100", g["ContentRange"]
assert g["ResponseMetadata"]["HTTPStatusCode"] == 206
g = s3.get_object(Bucket="suite", Key="dir/a.txt", Range="bytes=-5")
assert g["Body"].read() == body[-5:]
assert code(s3.get_object, Bucket="suite", Key="dir/a.txt", Range="bytes=5000-")[0] == "InvalidRange"

# Checksums boto3 sends (and checks on download)
r = s3.put_object(Bucket="suite", Key="sum", Body=b"abc", ChecksumAlgorithm="SHA256")
assert r["ChecksumSHA256"] == "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", r
g = s3.get_object(Bucket="suite", Key="sum", ChecksumMode="ENABLED")
assert g["Body"].read() == b"abc" and g["ChecksumSHA256"] == r["ChecksumSHA256"]
assert code(s3.put_object, Bucket="suite", Key="sum2", Body=b"abc", ChecksumSHA256="ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa1=")[0] in ("BadDigest", "InvalidRequest")

# Copy, with and without new metadata
c = s3.copy_object(Bucket="suite", Key="copy.txt", CopySource={"Bucket": "suite", "Key": "dir/a.txt"})
assert c["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
assert s3.head_object(Bucket="suite", Key="copy.txt")["Metadata"]["owner"] == "me"
s3.copy_object(Bucket="suite", Key="copy.txt", CopySource={"Bucket": "suite", "Key": "copy.txt"},
               MetadataDirective="REPLACE", Metadata={"new": "1"}, ContentType="application/x-test")
h = s3.head_object(Bucket="suite", Key="copy.txt")
assert h["Metadata"] == {"new": "1"} and h["ContentType"] == "application/x-test"
assert code(s3.copy_object, Bucket="suite", Key="copy.txt", CopySource={"Bucket": "suite", "Key": "copy.txt"})[0] == "InvalidRequest"

# Keys that trip servers up: +, space, %, unicode, "..", "//"; listed back exactly (boto3 asks encoding-type=url)
odd = ["sp ace/a+b%c.txt", "plus+plus", "ünï/cödé ✓", "../escape", "a//b", "./dot", "q?x=1&y#z", "a", "a/b"]
for k in odd:
    s3.put_object(Bucket="suite", Key=k, Body=k.encode())
for k in odd:
    assert s3.get_object(Bucket="suite", Key=k)["Body"].read() == k.encode(), k
listed = [o["Key"] for o in s3.list_objects_v2(Bucket="suite")["Contents"]]
for k in odd:
    assert k in listed, (k, listed)
assert listed == sorted(listed, key=lambda s: s.encode()), listed
assert [o["Key"] for o in s3.list_objects(Bucket="suite")["Contents"]] == listed

# Listing: prefix, delimiter, max-keys + continuation, start-after
for i in range(25):
    s3.put_object(Bucket="suite", Key="page/%02d" % i, Body=b"x")
s3.put_object(Bucket="suite", Key="page/sub/deep", Body=b"x")
r = s3.list_objects_v2(Bucket="suite", Prefix="page/", Delimiter="/")
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["page/sub/"] and r["KeyCount"] == 26
seen, token = [], None
while True:
    kw = {"ContinuationToken": token} if token else {}
    r = s3.list_objects_v2(Bucket="suite", Prefix="page/", MaxKeys=7, **kw)
    seen += [o["Key"] for o in r.get("Contents", [])]
    if not r["IsTruncated"]:
        break
    token = r["NextContinuationToken"]
assert seen == ["page/%02d" % i for i in range(25)] + ["page/sub/deep"], seen
r = s3.list_objects_v2(Bucket="suite", Prefix="page/", StartAfter="page/22")
assert [o["Key"] for o in r["Contents"]] == ["page/23", "page/24", "page/sub/deep"]
pag = s3.get_paginator("list_objects").paginate(Bucket="suite", Prefix="page/", PaginationConfig={"PageSize": 10})
assert sum(len(p.get("Contents", [])) for p in pag) == 26
v = s3.list_object_versions(Bucket="suite", Prefix="page/0")
assert len(v["Versions"]) == 10 and all(x["VersionId"] == "null" and x["IsLatest"] for x in v["Versions"])
assert code(s3.list_objects_v2, Bucket="suite", ContinuationToken="!!bad!!")[0] == "InvalidArgument"

# Delete, DeleteObjects (boto3 sends no Content-MD5, only a CRC32), BucketNotEmpty
s3.delete_object(Bucket="suite", Key="copy.txt")
s3.delete_object(Bucket="suite", Key="never-existed")
d = s3.delete_objects(Bucket="suite", Delete={"Objects": [{"Key": "page/%02d" % i} for i in range(25)]})
assert len(d["Deleted"]) == 25
assert code(s3.delete_bucket, Bucket="suite") == ("BucketNotEmpty", 409)

# Multipart by hand: ListParts, ListMultipartUploads, UploadPartCopy, Abort, ETag -N
mp = s3.create_multipart_upload(Bucket="suite", Key="mp/obj", ContentType="application/x-mp", Metadata={"m": "1"})
uid = mp["UploadId"]
p1 = os.urandom(5 * 1024 * 1024)
e1 = s3.upload_part(Bucket="suite", Key="mp/obj", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
e2 = s3.upload_part_copy(Bucket="suite", Key="mp/obj", UploadId=uid, PartNumber=2,
                         CopySource={"Bucket": "suite", "Key": "dir/a.txt"}, CopySourceRange="bytes=0-4")["CopyPartResult"]["ETag"]
parts = s3.list_parts(Bucket="suite", Key="mp/obj", UploadId=uid)["Parts"]
assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, len(p1)), (2, 5)]
ups = s3.list_multipart_uploads(Bucket="suite")["Uploads"]
assert [(u["Key"], u["UploadId"]) for u in ups] == [("mp/obj", uid)]
assert code(s3.complete_multipart_upload, Bucket="suite", Key="mp/obj", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})[0] == "InvalidPartOrder"
assert code(s3.complete_multipart_upload, Bucket="suite", Key="mp/obj", UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"0000"'}]})[0] == "InvalidPart"
done = s3.complete_multipart_upload(Bucket="suite", Key="mp/obj", UploadId=uid,
                                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
want = hashlib.md5(hashlib.md5(p1).digest() + hashlib.md5(b"hello").digest()).hexdigest() + "-2"
assert done["ETag"] == '"%s"' % want, (done["ETag"], want)
again = s3.complete_multipart_upload(Bucket="suite", Key="mp/obj", UploadId=uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
assert again["ETag"] == done["ETag"]
g = s3.get_object(Bucket="suite", Key="mp/obj")
assert g["Body"].read() == p1 + b"hello" and g["ContentType"] == "application/x-mp" and g["Metadata"] == {"m": "1"}
# Reads across part boundaries, and copies of a multipart object
g = s3.get_object(Bucket="suite", Key="mp/obj", Range="bytes=%d-%d" % (len(p1) - 2, len(p1) + 1))
assert g["Body"].read() == p1[-2:] + b"he"
s3.copy_object(Bucket="suite", Key="mp/copy", CopySource={"Bucket": "suite", "Key": "mp/obj"})
assert s3.get_object(Bucket="suite", Key="mp/copy")["Body"].read() == p1 + b"hello"
mp2 = s3.create_multipart_upload(Bucket="suite", Key="mp/copy2")
e = s3.upload_part_copy(Bucket="suite", Key="mp/copy2", UploadId=mp2["UploadId"], PartNumber=1,
                        CopySource={"Bucket": "suite", "Key": "mp/obj"}, CopySourceRange="bytes=%d-%d" % (len(p1) - 1, len(p1) + 4))["CopyPartResult"]["ETag"]
s3.complete_multipart_upload(Bucket="suite", Key="mp/copy2", UploadId=mp2["UploadId"], MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
assert s3.get_object(Bucket="suite", Key="mp/copy2")["Body"].read() == p1[-1:] + b"hello"
s3.delete_objects(Bucket="suite", Delete={"Objects": [{"Key": "mp/copy"}, {"Key": "mp/copy2"}]})
mp = s3.create_multipart_upload(Bucket="suite", Key="mp/small")
s3.upload_part(Bucket="suite", Key="mp/small", UploadId=mp["UploadId"], PartNumber=1, Body=b"tiny")
s3.upload_part(Bucket="suite", Key="mp/small", UploadId=mp["UploadId"], PartNumber=2, Body=b"tiny")
ps = s3.list_parts(Bucket="suite", Key="mp/small", UploadId=mp["UploadId"])["Parts"]
assert code(s3.complete_multipart_upload, Bucket="suite", Key="mp/small", UploadId=mp["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in ps]})[0] == "EntityTooSmall"
s3.abort_multipart_upload(Bucket="suite", Key="mp/small", UploadId=mp["UploadId"])
assert code(s3.list_parts, Bucket="suite", Key="mp/small", UploadId=mp["UploadId"])[0] == "NoSuchUpload"
assert code(s3.upload_part, Bucket="suite", Key="k", UploadId="../../../etc", PartNumber=1, Body=b"x")[0] == "NoSuchUpload"
assert s3.list_multipart_uploads(Bucket="suite").get("Uploads", []) == []

# upload_file / download_file of 100+ MiB: boto3's threaded multipart and ranged parallel GETs
big = os.urandom(101 * 1024 * 1024)
path = os.path.join(os.environ["WORK_DIR"], "big.bin")
with open(path, "wb") as f:
    f.write(big)
s3.upload_file(path, "suite", "big.bin")
h = s3.head_object(Bucket="suite", Key="big.bin")
assert h["ContentLength"] == len(big) and h["ETag"].endswith('-13"'), h["ETag"]
out = path + ".out"
s3.download_file("suite", "big.bin", out)
with open(out, "rb") as f:
    assert hashlib.sha256(f.read()).digest() == hashlib.sha256(big).digest()
# An overwrite by multipart must not keep the old object's checksum (boto3 would reject the download)
s3.put_object(Bucket="suite", Key="over", Body=b"small", ChecksumAlgorithm="CRC32")
s3.upload_file(path, "suite", "over", Config=TransferConfig(multipart_threshold=8 * 1024 * 1024))
s3.download_file("suite", "over", out)
assert os.path.getsize(out) == len(big)
del big

# Presigned URLs: boto3's default (SigV2 query auth) and SigV4, GET and PUT
for cfg in (None, Config(signature_version="s3v4")):
    c = boto3.client("s3", endpoint_url=EP, aws_access_key_id=AK, aws_secret_access_key=SK, region_name="us-east-1", config=cfg)
    url = c.generate_presigned_url("get_object", Params={"Bucket": "suite", "Key": "dir/a.txt"}, ExpiresIn=300)
    assert urllib.request.urlopen(url).read() == body
    url = c.generate_presigned_url("put_object", Params={"Bucket": "suite", "Key": "presigned-put"}, ExpiresIn=300)
    st, text = raw("PUT", url, b"via presigned put")
    assert st == 200, (st, text)
    assert s3.get_object(Bucket="suite", Key="presigned-put")["Body"].read() == b"via presigned put"
    # The URL signs one key: used for another, it is refused
    st, text = raw("PUT", url.replace("presigned-put", "presigned-put2"), b"x")
    assert st == 403 and b"<Code>SignatureDoesNotMatch</Code>" in text, (st, text)
print("OK")
