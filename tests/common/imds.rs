//! A stand-in for an EC2 instance's metadata service (IMDSv2), which cannot run off EC2: a
//! session token for a PUT, and the spot interruption notice (404 until the test gives one) for
//! a GET that carries the token. Just enough HTTP/1.1 for the SDK's metadata client.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const SESSION_TOKEN: &str = "imds-session-token";
const INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";

/// The stand-in, serving until dropped.
pub struct Imds {
    pub endpoint: String,
    notice: Arc<AtomicBool>,
    polls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Imds {
    pub async fn start() -> Imds {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let notice = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicUsize::new(0));
        let (serving_notice, serving_polls) = (notice.clone(), polls.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, serving_notice.clone(), serving_polls.clone()));
            }
        });
        Imds {
            endpoint,
            notice,
            polls,
            task,
        }
    }

    /// From now on, the instance has notice that EC2 takes it back.
    pub fn give_notice(&self) {
        self.notice.store(true, Ordering::SeqCst);
    }

    /// How many times the notice was asked for with a valid session token.
    pub fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

/// Answers the requests of one connection (kept alive) until it closes.
async fn serve(stream: TcpStream, notice: Arc<AtomicBool>, polls: Arc<AtomicUsize>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            headers.push(line);
        }
        let has = |prefix: &str| headers.iter().any(|header| header.starts_with(prefix));
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        // As IMDS does, a token comes with its time to live.
        let mut extra = "";
        let (status, body) = match (method, path) {
            ("PUT", "/latest/api/token") if has("x-aws-ec2-metadata-token-ttl-seconds:") => {
                extra = "x-aws-ec2-metadata-token-ttl-seconds: 21600\r\n";
                ("200 OK", SESSION_TOKEN.to_string())
            }
            ("GET", _) if !has(&format!("x-aws-ec2-metadata-token: {SESSION_TOKEN}")) => {
                ("401 Unauthorized", String::new())
            }
            ("GET", INSTANCE_ACTION) => {
                polls.fetch_add(1, Ordering::SeqCst);
                if notice.load(Ordering::SeqCst) {
                    (
                        "200 OK",
                        r#"{"action": "terminate", "time": "2026-12-02T08:22:00Z"}"#.to_string(),
                    )
                } else {
                    ("404 Not Found", String::new())
                }
            }
            _ => ("404 Not Found", String::new()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
