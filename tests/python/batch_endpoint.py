"""The OpenAI Batch API's routes for the tests, over a real chat endpoint.

No package on the registries reachable here serves the Batch API locally
(llama-cpp-python and vLLM's servers have no /v1/batches), so the tests run
this: POST /v1/files (multipart, purpose=batch), POST /v1/batches,
GET /v1/batches/{id}, GET /v1/batches?limit=N, GET /v1/files/{id}/content,
with each request line sent to `upstream` (the real local model, or a
fault-injecting endpoint) on a worker thread. A test tool: it can hold
batches in progress, refuse uploads, go down and come back on the same port
with its batches (a disconnect), and fail single requests.
"""
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class BatchEndpoint:
    def __init__(self, upstream, port=0):
        self.upstream = upstream.rstrip("/") + "/chat/completions"
        self.files = {}      # id -> bytes
        self.batches = {}    # id -> dict
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()   # clear() to hold batches in progress
        self.refuse_uploads = 0
        self.refuse_ids = set()  # custom_ids answered with a 400 line
        self.uploads = 0
        self.port = port
        self.server = None
        self.start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, obj):
                data = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/files":
                    with endpoint.lock:
                        endpoint.uploads += 1
                        if endpoint.refuse_uploads > 0:
                            endpoint.refuse_uploads -= 1
                            return self.reply(500, {"error": {"message": "upload refused (test)"}})
                    data = multipart_file(self.headers.get("Content-Type", ""), body)
                    if data is None:
                        return self.reply(400, {"error": {"message": "no file part"}})
                    with endpoint.lock:
                        fid = f"file-{len(endpoint.files) + 1}"
                        endpoint.files[fid] = data
                    return self.reply(200, {"id": fid, "object": "file", "purpose": "batch", "bytes": len(data)})
                if self.path == "/v1/batches":
                    req = json.loads(body)
                    if req.get("input_file_id") not in endpoint.files:
                        return self.reply(404, {"error": {"message": "no such file"}})
                    with endpoint.lock:
                        bid = f"batch_{len(endpoint.batches) + 1}"
                        batch = {"id": bid, "object": "batch", "endpoint": req.get("endpoint"),
                                 "input_file_id": req["input_file_id"], "status": "validating",
                                 "output_file_id": None, "error_file_id": None,
                                 "metadata": req.get("metadata") or {}, "created_at": int(time.time()),
                                 "request_counts": {"total": 0, "completed": 0, "failed": 0}}
                        endpoint.batches[bid] = batch
                    threading.Thread(target=endpoint.work, args=(bid,), daemon=True).start()
                    return self.reply(200, batch)
                self.reply(404, {"error": {"message": "no route"}})

            def do_GET(self):
                path, _, query = self.path.partition("?")
                if path == "/v1/batches":
                    with endpoint.lock:
                        data = sorted(endpoint.batches.values(), key=lambda b: b["id"], reverse=True)
                    limit = int(dict(p.split("=") for p in query.split("&") if "=" in p).get("limit", 20))
                    return self.reply(200, {"object": "list", "data": data[:limit]})
                if path.startswith("/v1/batches/"):
                    batch = endpoint.batches.get(path.rsplit("/", 1)[1])
                    return self.reply(200, batch) if batch else self.reply(404, {"error": {"message": "no batch"}})
                if path.startswith("/v1/files/") and path.endswith("/content"):
                    data = endpoint.files.get(path.split("/")[3])
                    return self.reply(200, data) if data is not None else self.reply(404, {"error": {}})
                self.reply(404, {"error": {"message": "no route"}})

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            request_queue_size = 64

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        """Go down (connections refused) keeping every batch; start() comes back."""
        self.server.shutdown()
        self.server.server_close()

    def work(self, bid):
        batch = self.batches[bid]
        lines = [json.loads(l) for l in self.files[batch["input_file_id"]].decode().splitlines() if l.strip()]
        batch["status"] = "in_progress"
        batch["request_counts"]["total"] = len(lines)
        out, err = [], []
        for n, line in enumerate(lines):
            cid = line["custom_id"]
            if cid in self.refuse_ids:
                err.append({"id": f"r{n}", "custom_id": cid, "error": None, "response": {
                    "status_code": 400, "body": {"error": {"message": "this request was refused (test)"}}}})
                batch["request_counts"]["failed"] += 1
                continue
            request = urllib.request.Request(self.upstream, json.dumps(line["body"]).encode(),
                                             {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=300) as r:
                    out.append({"id": f"r{n}", "custom_id": cid, "error": None,
                                "response": {"status_code": r.status, "body": json.load(r)}})
                batch["request_counts"]["completed"] += 1
            except urllib.error.HTTPError as e:
                err.append({"id": f"r{n}", "custom_id": cid, "error": None,
                            "response": {"status_code": e.code, "body": {"error": {"message": e.read().decode()[:200]}}}})
                batch["request_counts"]["failed"] += 1
        self.release.wait()
        batch["status"] = "finalizing"
        with self.lock:
            if out:
                fid = f"file-{len(self.files) + 1}"
                self.files[fid] = "".join(json.dumps(o) + "\n" for o in out).encode()
                batch["output_file_id"] = fid
            if err:
                fid = f"file-{len(self.files) + 1}"
                self.files[fid] = "".join(json.dumps(e) + "\n" for e in err).encode()
                batch["error_file_id"] = fid
        batch["status"] = "completed"

    def close(self):
        self.release.set()
        self.stop()


def multipart_file(content_type, body):
    """The `file` part of a multipart/form-data body."""
    if "boundary=" not in content_type:
        return None
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, sep, data = part.partition(b"\r\n\r\n")
        if sep and b'name="file"' in head:
            return data[:-2] if data.endswith(b"\r\n") else data
    return None
