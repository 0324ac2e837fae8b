"""A Google Cloud Storage server on 127.0.0.1 (gcp-storage-emulator, in memory) that gcsfs, google-cloud-storage
and tensorstore all talk to, for testing gs:// run directories with no network.

The emulator leaves out the `x-goog-generation` header of object reads; tensorstore (orbax's array writer) needs it
to tell object versions apart, so it is added here to every object GET."""

import socket
from contextlib import contextmanager

from gcp_storage_emulator import server as gcs
from gcp_storage_emulator.handlers import objects


def _with_generation(handler):
    def handle(request, response, storage, *args, **kwargs):
        handler(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # no such object: the handler has answered 404 already
            return
        response["x-goog-generation"] = obj["generation"]
        response["x-goog-metageneration"] = obj["metageneration"]
    handle.wrapped = handler
    return handle


for _, methods in gcs.HANDLERS:
    for method, handler in list(methods.items()):
        if handler in (objects.download, objects.get):
            methods[method] = _with_generation(handler)


@contextmanager
def serve(bucket: str):
    """Yields the environment that points every GCS client at a fresh in-memory server holding `bucket`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = gcs.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url}
    finally:
        server.stop()
