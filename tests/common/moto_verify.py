"""moto's S3 server, checking the bodies of uploads as S3 does.

moto 5.2.1 stores the Content-MD5 and x-amz-checksum-sha256 a PutObject or UploadPart carries
without comparing them with the body it received. S3 (and MinIO, Ceph, ...) refuse such a
request with 400 BadDigest; this runs moto's own server (same arguments as `moto_server`) with
that check added in front of those two operations, so that a test can prove that the checksums
packager sends are verified by a store that checks them.
"""

import base64
import hashlib
import sys

from moto.s3.exceptions import S3ClientError
from moto.s3.responses import S3Response
from moto.server import main


class BadDigest(S3ClientError):
    code = "BadDigest"

    def __init__(self, what: str) -> None:
        super().__init__(
            "BadDigest", f"The {what} you specified did not match the calculated checksum."
        )


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def verifying(operation):
    def checked(self):
        body = self.body or b""
        if isinstance(body, str):
            body = body.encode()
        md5 = self.headers.get("Content-MD5")
        if md5 is not None and md5 != b64(hashlib.md5(body).digest()):
            raise BadDigest("Content-MD5")
        sha256 = self.headers.get("x-amz-checksum-sha256")
        if sha256 is not None and sha256 != b64(hashlib.sha256(body).digest()):
            raise BadDigest("SHA256")
        return operation(self)

    return checked


S3Response.put_object = verifying(S3Response.put_object)
S3Response.upload_part = verifying(S3Response.upload_part)

if __name__ == "__main__":
    main(sys.argv[1:])
