"""Uploads one file with tuspy (tusclient) in two runs, as an interrupted program would.

Usage: clients-tuspy-resume.py ENDPOINT FILE CHUNK_SIZE STORAGE start N
           sends N chunks, then stops (the process exits with the upload unfinished)
       clients-tuspy-resume.py ENDPOINT FILE CHUNK_SIZE STORAGE finish
           a new uploader finds the URL in STORAGE (tusclient's FileStorage, keyed by the
           file's fingerprint), asks the server for the offset and uploads the rest
Prints one JSON line: {"url": ..., "started_at": ..., "offset": ..., "chunks": ...}.
Run with Debian's /usr/bin/python3 (package python3-tuspy).
"""
import json
import os
import sys

from tusclient import client
from tusclient.storage import filestorage


def main() -> None:
    endpoint, path, chunk_size, storage_path, mode = sys.argv[1:6]
    storage = filestorage.FileStorage(storage_path)
    uploader = client.TusClient(endpoint).uploader(
        file_path=path,
        chunk_size=int(chunk_size),
        metadata={"filename": os.path.basename(path)},
        store_url=True,
        url_storage=storage,
    )
    # With a stored URL, the constructor already asked the server (HEAD) where to go on from.
    started_at = uploader.offset
    resumed_url = uploader.url
    chunks = 0
    if mode == "start":
        for _ in range(int(sys.argv[6])):
            uploader.upload_chunk()
            chunks += 1
    elif mode == "finish":
        if resumed_url is None:
            raise SystemExit("no stored upload URL to resume")
        while uploader.offset < uploader.get_file_size():
            uploader.upload_chunk()
            chunks += 1
    else:
        raise SystemExit(f"unknown mode {mode}")
    storage.close()
    print(json.dumps({
        "url": uploader.url,
        "resumed_url": resumed_url,
        "started_at": started_at,
        "offset": uploader.offset,
        "chunks": chunks,
    }))


if __name__ == "__main__":
    main()
