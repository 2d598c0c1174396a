#!/usr/bin/env python3
"""A Baken client a provider can copy into an upload pipeline.

Two ways to check an upload:

* ``match_local`` — the privacy-preserving path: hash the file yourself (MD5 with hashlib here;
  PDQ with the PyPI ``pdqhash`` package when it is installed) and send only hashes. The image
  never leaves your infrastructure.
* ``scan`` — send the image; Baken decodes and hashes it in memory, drops it, matches, and on a
  match (with a report context) creates a report.

Needs ``grpcio`` and ``grpcio-tools`` (``pip install grpcio grpcio-tools``). Stubs are generated
from Baken's ``proto/`` directory on first use (or point ``BAKEN_PROTO`` at a copy of it).

Usage::

    python3 examples/python_client.py --target 127.0.0.1:50051 scan baken-demo/demo-0.jpg
    python3 examples/python_client.py --token "$BAKEN_TOKEN" --ca ca.pem \\
        --target baken.internal:50051 match-local upload.jpg

Errors are gRPC status codes; retry RESOURCE_EXHAUSTED ("server busy") and UNAVAILABLE with
backoff, fix the request on INVALID_ARGUMENT, and check your token / role on UNAUTHENTICATED /
PERMISSION_DENIED.
"""

import argparse
import hashlib
import importlib
import os
import random
import sys
import tempfile
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.environ.get("BAKEN_PROTO", os.path.join(HERE, "..", "proto"))


def load_stubs(proto_dir=DEFAULT_PROTO, out_dir=None):
    """Generate (once) and import the Python stubs of Baken's API. Returns (pb2, grpc) modules
    of scan, lists and reports as a dict."""
    from grpc_tools import protoc

    out_dir = out_dir or os.path.join(tempfile.gettempdir(), "baken-py-stubs")
    os.makedirs(out_dir, exist_ok=True)
    protos = [os.path.join("baken", "v1", f) for f in ("hashing.proto", "scan.proto", "lists.proto", "reports.proto")]
    if not os.path.exists(os.path.join(out_dir, "baken", "v1", "scan_pb2_grpc.py")):
        include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
        rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos])
        if rc != 0:
            raise RuntimeError(f"protoc failed ({rc}) on {proto_dir}")
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)
    mods = {}
    for name in ("hashing", "scan", "lists", "reports"):
        mods[name] = importlib.import_module(f"baken.v1.{name}_pb2")
        if name != "hashing":
            mods[name + "_grpc"] = importlib.import_module(f"baken.v1.{name}_pb2_grpc")
    return mods


class BakenClient:
    """A small, retrying client. ``token``: a bearer token (roles come from the server's tokens
    file). ``ca``/``cert``/``key``: PEM files for TLS and mutual TLS."""

    RETRY = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)

    def __init__(self, target, token=None, ca=None, cert=None, key=None, timeout=30.0, stubs=None):
        self.pb = stubs or load_stubs()
        options = [("grpc.max_send_message_length", 65 << 20), ("grpc.max_receive_message_length", 65 << 20)]
        if ca or cert:
            read = lambda p: open(p, "rb").read() if p else None
            creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout
        self.scan_stub = self.pb["scan_grpc"].ScanServiceStub(self.channel)
        self.lists_stub = self.pb["lists_grpc"].ListServiceStub(self.channel)
        self.reports_stub = self.pb["reports_grpc"].ReportServiceStub(self.channel)

    def _call(self, fn, request, attempts=5):
        """Call with a deadline; back off and retry when the server sheds load."""
        delay = 0.05
        for i in range(attempts):
            try:
                return fn(request, timeout=self.timeout, metadata=self.metadata)
            except grpc.RpcError as e:
                if e.code() not in self.RETRY or i == attempts - 1:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay *= 2

    # -- scanning --------------------------------------------------------------------------

    def hash_image(self, image: bytes):
        return self._call(self.scan_stub.HashImage, self.pb["hashing"].HashRequest(image=image))

    def scan(self, image: bytes, content_reference=None, account_id=None, lists=(), urgent=False):
        """Scan an image. With ``content_reference`` (your pointer to the upload), a match
        creates a report."""
        pb = self.pb
        ctx = None
        if content_reference:
            ctx = pb["reports"].ReportContext(
                content_reference=content_reference,
                account=pb["reports"].Account(id=account_id or ""),
                urgency=pb["reports"].Urgency(urgent=urgent),
            )
        req = pb["scan"].ScanRequest(image=image, lists=list(lists), context=ctx)
        return self._call(self.scan_stub.Scan, req)

    def match_hashes(self, hashes, content_reference=None, lists=()):
        """``hashes``: list of (type, value) or (type, value, quality) tuples."""
        pb = self.pb
        values = []
        for h in hashes:
            v = pb["scan"].HashValue(type=h[0], value=h[1])
            if len(h) > 2 and h[2] is not None:
                v.quality = h[2]
            values.append(v)
        ctx = pb["reports"].ReportContext(content_reference=content_reference) if content_reference else None
        req = pb["scan"].MatchHashesRequest(hashes=values, lists=list(lists), context=ctx)
        return self._call(self.scan_stub.MatchHashes, req)

    def match_local(self, image: bytes, **kw):
        """The privacy-preserving path: hash here, send hashes only."""
        hashes = [("md5", hashlib.md5(image).hexdigest()), ("sha1", hashlib.sha1(image).hexdigest())]
        try:  # PDQ when the optional `pdqhash` package (and numpy, Pillow) is installed.
            import io

            import numpy as np
            import pdqhash
            from PIL import Image

            px = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
            vec, quality = pdqhash.compute(px)
            bits = "".join(str(int(b)) for b in vec)
            hashes.append(("pdq", f"{int(bits, 2):064x}", int(quality)))
        except ImportError:
            pass
        return self.match_hashes(hashes, **kw)

    # -- lists -----------------------------------------------------------------------------

    def create_list(self, name, source="own"):
        return self._call(self.lists_stub.CreateList, self.pb["lists"].CreateListRequest(name=name, source=source))

    def import_list(self, name, data: bytes, fmt="csv", chunk=1 << 20):
        pb = self.pb["lists"]
        formats = {"csv": pb.LIST_FORMAT_CSV, "tsv": pb.LIST_FORMAT_TSV, "threatexchange": pb.LIST_FORMAT_THREATEXCHANGE,
                   "stopncii": pb.LIST_FORMAT_STOPNCII, "ncmec": pb.LIST_FORMAT_NCMEC, "vics": pb.LIST_FORMAT_VICS}

        def parts():
            yield pb.ImportListRequest(header=pb.ImportHeader(list=name, format=formats[fmt], source="python"))
            for i in range(0, len(data), chunk):
                yield pb.ImportListRequest(data=data[i:i + chunk])

        # Client streaming is not retried: a stream cannot be replayed from the iterator.
        return self.lists_stub.ImportList(parts(), timeout=self.timeout, metadata=self.metadata)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--token", default=os.environ.get("BAKEN_TOKEN"))
    ap.add_argument("--ca", help="PEM CA bundle of the server's certificate (enables TLS)")
    ap.add_argument("--cert", help="client certificate (mutual TLS)")
    ap.add_argument("--key", help="client key (mutual TLS)")
    ap.add_argument("command", choices=["hash", "scan", "match-local"])
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    client = BakenClient(a.target, token=a.token, ca=a.ca, cert=a.cert, key=a.key)
    for f in a.files:
        data = open(f, "rb").read()
        try:
            if a.command == "hash":
                r = client.hash_image(data)
                print(f, "pdq", r.pdq.hash, "quality", r.pdq.quality, "md5", r.md5)
            elif a.command == "scan":
                r = client.scan(data, content_reference=f"file:{f}")
                ms = [(m.list, m.entry, m.hash_type, m.distance) for m in r.result.matches]
                print(f, "matches", ms, "report", r.report_id or r.report_note or "-")
            else:
                r = client.match_local(data)
                print(f, "matches", [(m.list, m.entry, m.hash_type, m.distance) for m in r.result.matches])
        except grpc.RpcError as e:
            print(f, "error", e.code().name, e.details(), file=sys.stderr)


if __name__ == "__main__":
    main()
