//! A TCP relay in front of an HTTP server that loses the server's answers to some requests:
//! the request reaches the server and is carried out, but the client's connection is closed
//! before any of the answer reaches it, as when a network or a load balancer drops it. The
//! answers it swallowed are kept for the test to read.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The relay, serving until dropped.
pub struct LostAnswers {
    /// `http://127.0.0.1:PORT`: where clients are to send their requests.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    /// Answers still to lose.
    budget: usize,
    /// The answers lost, as the server sent them.
    lost: Vec<String>,
}

impl Drop for LostAnswers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LostAnswers {
    /// Relays to `upstream` (`http://host:port`), losing the answers to the first `count`
    /// requests whose bytes contain `marker` and whose answers end with `answer_end`.
    pub async fn start(
        upstream: &str,
        marker: &'static str,
        answer_end: &'static str,
        count: usize,
    ) -> LostAnswers {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            budget: count,
            lost: Vec::new(),
        }));
        let relaying = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let state = relaying.clone();
                tokio::spawn(relay(client, server, state, marker, answer_end));
            }
        });
        LostAnswers {
            endpoint,
            state,
            task,
        }
    }

    /// The answers lost so far.
    pub fn lost(&self) -> Vec<String> {
        self.state.lock().unwrap().lost.clone()
    }
}

/// Carries one connection's requests to the server and its answers back, until a request
/// with the marker comes while the budget lasts: its answer is read to its end and kept, and
/// both connections are closed.
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    state: Arc<Mutex<State>>,
    marker: &str,
    answer_end: &str,
) {
    let mut from_client = vec![0u8; 64 * 1024];
    let mut from_server = vec![0u8; 64 * 1024];
    // The tail of the last read too, so a marker split between two reads is seen.
    let mut recent = Vec::new();
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => {
                let Ok(n @ 1..) = read else { return };
                if server.write_all(&from_client[..n]).await.is_err() {
                    return;
                }
                recent.extend_from_slice(&from_client[..n]);
                if contains(&recent, marker.as_bytes()) && take_one(&state) {
                    let answer = read_answer(&mut server, answer_end).await;
                    state.lock().unwrap().lost.push(answer);
                    return;
                }
                let keep = recent.len().saturating_sub(marker.len());
                recent.drain(..keep);
            }
            read = server.read(&mut from_server) => {
                let Ok(n @ 1..) = read else { return };
                if client.write_all(&from_server[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn take_one(state: &Mutex<State>) -> bool {
    let mut state = state.lock().unwrap();
    if state.budget == 0 {
        return false;
    }
    state.budget -= 1;
    true
}

/// The server's answer, up to `end` (or whatever came before the server closed or a minute).
async fn read_answer(server: &mut TcpStream, end: &str) -> String {
    let mut answer = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while !contains(&answer, end.as_bytes()) {
        match tokio::time::timeout_at(deadline, server.read(&mut buffer)).await {
            Ok(Ok(n @ 1..)) => answer.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
