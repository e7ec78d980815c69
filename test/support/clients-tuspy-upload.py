"""Uploads one file with tuspy (tusclient), as a Python program would.

Usage: clients-tuspy-upload.py ENDPOINT FILE CHUNK_SIZE [--checksum] [--retries N]
Prints one JSON line: {"url": ..., "offset": ...}.
Run with Debian's /usr/bin/python3 (package python3-tuspy).
"""
import argparse
import json
import os

from tusclient import client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("file")
    parser.add_argument("chunk_size", type=int)
    parser.add_argument("--checksum", action="store_true", help="send Upload-Checksum (sha1)")
    parser.add_argument("--retries", type=int, default=0)
    args = parser.parse_args()
    uploader = client.TusClient(args.endpoint).uploader(
        file_path=args.file,
        chunk_size=args.chunk_size,
        metadata={"filename": os.path.basename(args.file)},
        upload_checksum=args.checksum,
        retries=args.retries,
        retry_delay=0.2,
    )
    uploader.upload()
    print(json.dumps({"url": uploader.url, "offset": uploader.offset}))


if __name__ == "__main__":
    main()
