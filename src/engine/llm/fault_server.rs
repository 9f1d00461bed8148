//! A fault-injecting chat endpoint for the runner's tests: it answers each
//! request with the next scripted reply (429 with Retry-After, 500, a body
//! that is not JSON, a reply that breaks the schema, a 401, a stall, a slow
//! good answer) and records what it saw. A test tool, not a model.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Reply {
    Good,
    SlowGood { millis: u64 },
    TooManyRequests { retry_after: &'static str },
    ServerError,
    Malformed,
    SchemaViolation,
    Unauthorized,
    Stall { millis: u64 },
}

struct Seen {
    script: Vec<Reply>,
    next: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    authorization: Mutex<Vec<String>>,
}

pub struct FaultServer {
    port: u16,
    seen: Arc<Seen>,
}

impl FaultServer {
    /// Serve `script` in order (the last reply repeats) on a free local port.
    pub fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let port = listener.local_addr().expect("address").port();
        let seen = Arc::new(Seen {
            script,
            next: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            authorization: Mutex::new(Vec::new()),
        });
        let served = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = served.clone();
                std::thread::spawn(move || serve(stream, &seen));
            }
        });
        FaultServer { port, seen }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/chat/completions", self.port)
    }

    pub fn max_in_flight(&self) -> usize {
        self.seen.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn saw_bearer(&self, key: &str) -> bool {
        let want = format!("Bearer {key}");
        self.seen.authorization.lock().unwrap().contains(&want)
    }
}

fn completion(content: &str) -> String {
    serde_json::json!({
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9}
    })
    .to_string()
}

fn serve(stream: TcpStream, seen: &Seen) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let (mut length, mut authorization) = (0usize, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => authorization = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    seen.authorization.lock().unwrap().push(authorization.clone());
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let i = seen.next.fetch_add(1, Ordering::SeqCst);
    let reply = seen.script[i.min(seen.script.len() - 1)].clone();
    let good = completion(r#"{"instruction": "only peer-reviewed sources"}"#);
    let (status, extra, text) = match reply {
        Reply::Good => (200, String::new(), good),
        Reply::SlowGood { millis } | Reply::Stall { millis } => {
            std::thread::sleep(Duration::from_millis(millis));
            (200, String::new(), good)
        }
        Reply::TooManyRequests { retry_after } => (
            429,
            format!("Retry-After: {retry_after}\r\n"),
            r#"{"error": {"message": "rate limited"}}"#.to_string(),
        ),
        Reply::ServerError => (500, String::new(), "internal error".to_string()),
        Reply::Malformed => (200, String::new(), "{\"choices\": [".to_string()),
        Reply::SchemaViolation => (200, String::new(), completion(r#"{"verdict": "maybe"}"#)),
        Reply::Unauthorized => (
            401,
            String::new(),
            format!(
                "Incorrect API key provided: {}",
                authorization.trim_start_matches("Bearer ")
            ),
        ),
    };
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{text}",
        text.len()
    );
}
