# Test preamble, not part of any snippet: glibc on this machine does not resolve
# *.localhost names (botocore asks the system resolver), so `s3.localhost:30080` is pointed
# at the test server here, the way an /etc/hosts line would in a real setup.
import os, socket
_real_getaddrinfo = socket.getaddrinfo
_PORT = int(os.environ["S3_PORT"])
def _getaddrinfo(host, port, *args, **kwargs):
    if isinstance(host, str) and (host == "localhost" or host.endswith(".localhost")):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", _PORT))]
    return _real_getaddrinfo(host, port, *args, **kwargs)
socket.getaddrinfo = _getaddrinfo
