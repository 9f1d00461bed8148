"""A fault-injecting OpenAI-compatible chat endpoint for the tests: each
request gets the next scripted reply (the last one repeats). A test tool
that produces failures, not a stand-in for a model.

Replies: "good", ("slow", seconds), ("429", retry_after), "404" (GET too:
an endpoint without the Batch API), "500",
"malformed", "schema" (valid JSON that breaks the instruction schema),
"401" (echoes the bearer key, as some providers do), ("stall", seconds),
"yesno" or ("yesno", seconds) (one answer token with logprobs, after that
delay; `judge(request)` gives P(yes)), "judged" (a completion whose content
is `judge(request)` as JSON: a listwise ranking, say),
"echo" (a 200 whose body is not JSON and repeats every request header, as a
debugging proxy does), "echo_json" (a completion whose content repeats the
headers as a JSON object, which breaks the reply schema).
A "good" reply's content is `good` (a JSON object, by default an
instruction-stage reply); a callable `good(i)` gives the i-th request's.
"""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(content):
    return json.dumps({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9},
    })


def yes_no_completion(p_yes):
    """One answer token with OpenAI-style top logprobs for Yes and No."""
    import math
    answer = "Yes" if p_yes >= 0.5 else "No"
    top = [{"token": "Yes", "logprob": math.log(max(p_yes, 1e-9))},
           {"token": "No", "logprob": math.log(max(1 - p_yes, 1e-9))}]
    top.sort(key=lambda t: -t["logprob"])
    return json.dumps({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "length",
                     "logprobs": {"content": [{"token": answer, "logprob": top[0]["logprob"], "top_logprobs": top}]}}],
        "usage": {"prompt_tokens": 90, "completion_tokens": 1},
    })


GOOD = {"instruction": "Only peer-reviewed sources about the topic."}


class FaultEndpoint:
    def __init__(self, script, good=GOOD, judge=None):
        self.script = list(script)
        self.good = good
        # "yesno" replies: request body (dict) -> P(yes), after arg seconds;
        # "judged" replies: request body (dict) -> the reply's JSON value.
        self.judge = judge
        self.requests = []  # (time, authorization header, body)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.do_POST()  # scripted alike: "404" answers every route

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                auth = self.headers.get("Authorization", "")
                self.body = body
                self.echoed = {k: v for k, v in self.headers.items()}
                with endpoint.lock:
                    i = len(endpoint.requests)
                    endpoint.requests.append((time.monotonic(), auth, body))
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                reply = endpoint.script[min(i, len(endpoint.script) - 1)]
                try:
                    status, text, headers = self.answer(reply, auth, i)
                finally:
                    # Count the request as finished before its reply is sent: once the
                    # client has the bytes it may start the next request, and counting
                    # after the write would see both at once (a false overlap).
                    with endpoint.lock:
                        endpoint.in_flight -= 1
                self.send(status, text, headers)

            def answer(self, reply, auth, i):
                kind, arg = (reply, None) if isinstance(reply, str) else reply
                headers = {}
                good = endpoint.good(i) if callable(endpoint.good) else endpoint.good
                if kind == "good":
                    status, text = 200, completion(json.dumps(good))
                elif kind in ("slow", "stall"):
                    time.sleep(arg)
                    status, text = 200, completion(json.dumps(good))
                elif kind == "429":
                    status, text, headers = 429, '{"error": {"message": "rate limited"}}', {"Retry-After": str(arg)}
                elif kind == "404":
                    status, text = 404, '{"error": {"message": "no such route"}}'
                elif kind == "500":
                    status, text = 500, "internal error"
                elif kind == "malformed":
                    status, text = 200, '{"choices": ['
                elif kind == "schema":
                    status, text = 200, completion('{"verdict": "maybe"}')
                elif kind == "yesno":
                    time.sleep(arg or 0)
                    status, text = 200, yes_no_completion(endpoint.judge(json.loads(self.body)))
                elif kind == "judged":
                    status, text = 200, completion(json.dumps(endpoint.judge(json.loads(self.body))))
                elif kind == "echo":
                    status, text = 200, "you sent:\n" + "\n".join(f"{k}: {v}" for k, v in self.echoed.items())
                elif kind == "echo_json":
                    status, text = 200, completion(json.dumps({"headers": self.echoed}))
                elif kind == "401":
                    status, text = 401, "Incorrect API key provided: " + auth.removeprefix("Bearer ")
                else:
                    raise ValueError(kind)
                return status, text, headers

            def send(self, status, text, headers):
                data = text.encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a cancel): fine

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # socketserver's 5 drops simultaneous connects (1 s SYN retry)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
