//! Results over HTTP, read off plain sockets as any client would: pages after a cursor, the
//! Server-Sent Events stream and its resumption from `Last-Event-ID`, a job's raw result,
//! `POST /api/call`, and the answers to bad cursors and unknown batches and jobs.

mod common;

use common::*;
use drover::status::Completion;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One event as a client of the stream sees it.
#[derive(Debug, Default, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: String,
    comment: Option<String>,
}

/// A Server-Sent Events stream read off a socket, event by event, as the server sends them.
struct EventStream {
    head: String,
    reader: BufReader<TcpStream>,
    text: String,
}

impl EventStream {
    /// Opens `path`, which must answer 200.
    async fn open(address: &str, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        EventStream {
            head,
            reader,
            text: String::new(),
        }
    }

    /// The next event, or None once the server ended the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let mut size = String::new();
            self.reader.read_line(&mut size).await.ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.ok()?;
            chunk.truncate(size);
            self.text.push_str(&String::from_utf8(chunk).unwrap());
        }
    }

    /// The next event that is not a comment.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            let event = self.next().await?;
            if event.comment.is_none() {
                return Some(event);
            }
        }
    }
}

fn parse(block: &str) -> Event {
    let mut event = Event::default();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            event.comment = Some(comment.trim().to_string());
        } else if let Some((field, value)) = line.split_once(": ") {
            match field {
                "id" => event.id = Some(value.into()),
                "event" => event.event = Some(value.into()),
                "data" => event.data.push_str(value),
                other => panic!("unexpected field {other}: {block}"),
            }
        }
    }
    event
}

/// A result event's record, checked against its id.
fn record_of(event: &Event) -> Completion {
    assert_eq!(event.event.as_deref(), Some("result"), "{event:?}");
    let record: Completion = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        event.id.as_deref(),
        Some(record.record.cursor.to_string().as_str())
    );
    record
}

async fn get(address: &str, path: &str) -> HttpResponse {
    http(address, "GET", path, &[], b"").await
}

async fn post_json(
    address: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> HttpResponse {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    http(address, "POST", path, &headers, body.to_string().as_bytes()).await
}

/// A job object that prints `job-<id>` once `$OUT/<gate>` exists (at once without a gate).
fn printing_job(gate: Option<&str>) -> Value {
    let wait = gate.map_or(String::new(), |gate| {
        format!("while [ ! -f \"$OUT/{gate}\" ]; do sleep 0.02; done; ")
    });
    json!({"cmd": ["sh", "-c", format!("{wait}echo job-$DROVER_JOB_ID")]})
}

async fn start(workers: u32) -> (Cluster, String) {
    let http_address = format!("127.0.0.1:{}", free_port());
    let mut cluster = Cluster::start(&["--http", &http_address]).await;
    cluster.start_worker("w1", workers, &[]);
    cluster.wait_for_workers(1).await;
    (cluster, http_address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_give_each_record_once_and_resume_after_the_last_event_id() {
    let (cluster, address) = start(4).await;
    let mut jobs: Vec<Value> = (0..6).map(|_| printing_job(None)).collect();
    jobs.extend((0..6).map(|_| printing_job(Some("go"))));
    let created = post_json(
        &address,
        "/api/batches",
        &[],
        &json!({"name": "sse", "jobs": jobs}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let batch = created.json()["batch"].as_u64().unwrap();
    let path = format!("/api/batches/{batch}/events");

    // Six records while the batch runs.
    let mut events = EventStream::open(&address, &path, &[]).await;
    assert!(
        events
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        events.head
    );
    let mut seen = Vec::new();
    while seen.len() < 6 {
        seen.push(record_of(&events.next_event().await.expect("an event")));
    }
    drop(events);
    std::fs::write(cluster.out_dir().join("go"), b"").unwrap();

    // Back after the third, as a browser reconnects: the header wins over the URL's cursor.
    let third = seen[2].record.cursor.to_string();
    let mut events = EventStream::open(
        &address,
        &format!("{path}?after=0"),
        &[("Last-Event-ID", &third)],
    )
    .await;
    let mut records = seen[..3].to_vec();
    let done = loop {
        let event = events.next_event().await.expect("events until done");
        if event.event.as_deref() == Some("done") {
            break event;
        }
        records.push(record_of(&event));
    };
    assert_eq!(events.next().await, None, "the stream ends after done");
    assert_eq!(records.len(), 12);
    let cursors: Vec<u64> = records.iter().map(|record| record.record.cursor).collect();
    assert!(
        cursors.windows(2).all(|pair| pair[0] < pair[1]),
        "{cursors:?}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&done.data).unwrap(),
        json!({"cursor": cursors[11]})
    );
    for record in &records {
        let printed = format!("job-{}\n", record.record.id);
        assert_eq!(record.result.as_deref(), Some(printed.as_bytes()));
    }

    // The same records in pages: all at once, or five at a time from a cursor.
    let page = get(&address, &format!("/api/batches/{batch}/results")).await;
    assert_eq!(page.status, 200, "{page:?}");
    let page = page.json();
    assert_eq!(
        (&page["done"], &page["cursor"]),
        (&json!(true), &json!(cursors[11]))
    );
    let listed: Vec<Completion> = serde_json::from_value(page["results"].clone()).unwrap();
    assert_eq!(listed, records);
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = get(
            &address,
            &format!("/api/batches/{batch}/results?after={after}&limit=5"),
        )
        .await
        .json();
        let results: Vec<Completion> = serde_json::from_value(page["results"].clone()).unwrap();
        paged.extend(results);
        after = page["cursor"].as_u64().unwrap();
        if page["done"] == true {
            break;
        }
        assert!(paged.len() < 20, "pages end");
    }
    assert_eq!(paged, records);
    let every = get(&address, "/api/results").await.json();
    assert_eq!(every["done"], false, "every batch's pages never end");

    // A stream from the end of a done batch says done at once.
    let mut events =
        EventStream::open(&address, &format!("{path}?after={}", cursors[11]), &[]).await;
    assert_eq!(
        events.next_event().await.unwrap().event.as_deref(),
        Some("done")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batchs_stream_keeps_alive_while_quiet_and_sends_what_comes() {
    let (cluster, address) = start(1).await;
    let mut events = EventStream::open(&address, "/api/events", &[]).await;
    // Nothing is recorded: a comment comes, so proxies keep the stream open.
    let quiet = events.next().await.unwrap();
    assert_eq!(quiet.comment.as_deref(), Some("keep-alive"), "{quiet:?}");
    let called = post_json(
        &address,
        "/api/call",
        &[],
        &json!({"handler": "noop", "payload": "hi"}),
    )
    .await;
    assert_eq!(called.status, 200, "{called:?}");
    let record = record_of(&events.next_event().await.unwrap());
    assert_eq!(record.result.as_deref(), Some(&b"hi"[..]));
    assert_eq!(called.json()["id"], record.record.id);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_answers_with_its_record_and_the_raw_result_is_the_bytes_returned() {
    let (cluster, address) = start(2).await;
    // Bytes that are not UTF-8: base64 in JSON, as they are from the raw endpoint.
    let returned: [u8; 5] = [0xff, 0x00, 0x01, 0x80, b'\n'];
    let called = post_json(
        &address,
        "/api/call",
        &[],
        &json!({"handler": "noop", "payload_base64": "/wABgAo=", "name": "bytes"}),
    )
    .await;
    assert_eq!(called.status, 200, "{called:?}");
    let record = called.json();
    assert_eq!(record["result_base64"], "/wABgAo=", "{record}");
    assert!(record.get("result").is_none(), "{record}");
    assert_eq!(
        (&record["state"], &record["name"]),
        (&json!("succeeded"), &json!("bytes"))
    );
    for field in [
        "cursor",
        "id",
        "batch",
        "exit_code",
        "worker",
        "duration_ms",
        "finished_at_ms",
        "error",
    ] {
        assert!(record.get(field).is_some(), "{field}: {record}");
    }
    let id = record["id"].as_u64().unwrap();
    let raw = get(&address, &format!("/api/jobs/{id}/result")).await;
    assert_eq!(raw.status, 200);
    assert!(
        raw.headers
            .to_ascii_lowercase()
            .contains("content-type: application/octet-stream"),
        "{}",
        raw.headers
    );
    assert_eq!(raw.bytes, returned);
    let job = get(&address, &format!("/api/jobs/{id}")).await.json();
    assert_eq!(job["result_base64"], "/wABgAo=");
    let shown = cluster.cli(&["job", &id.to_string(), "--json"]);
    let shown: Value = serde_json::from_str(&stdout_of(&shown)).unwrap();
    assert_eq!(shown["result_base64"], "/wABgAo=");

    // Text is text; under one key, one job however often it is called.
    let echo = json!({"cmd": ["echo", "hi"]});
    let keyed = [("Idempotency-Key", "call-1")];
    let first = post_json(&address, "/api/call", &keyed, &echo).await.json();
    assert_eq!(first["result"], "hi\n", "{first}");
    let again = post_json(&address, "/api/call", &keyed, &echo).await.json();
    assert_eq!(again, first);
    let batches: Vec<Value> =
        serde_json::from_str(&get(&address, "/api/batches").await.body).unwrap();
    assert_eq!(batches.len(), 2, "{batches:?}");

    // Bad calls are refused naming what is wrong.
    let bad = post_json(&address, "/api/call", &[], &json!({"cmd": 3})).await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert_eq!(bad.json()["field"], "cmd", "{bad:?}");
    let not_json = http(
        &address,
        "POST",
        "/api/call",
        &[("Content-Type", "application/json")],
        b"{",
    )
    .await;
    assert_eq!(not_json.status, 400, "{not_json:?}");

    // A job with no result, yet or at all, and no job: 404 saying which.
    let failed = post_json(
        &address,
        "/api/call",
        &[],
        &json!({"cmd": ["false"], "max_attempts": 1}),
    )
    .await
    .json();
    assert_eq!(failed["state"], "failed");
    let none = get(&address, &format!("/api/jobs/{}/result", failed["id"])).await;
    assert_eq!(none.status, 404);
    assert_eq!(
        none.json()["error"],
        format!("job {} failed without a result", failed["id"])
    );
    let waiting = post_json(
        &address,
        "/api/batches",
        &[],
        &json!({"jobs": [{"cmd": ["true"], "requires": ["tpu"]}]}),
    )
    .await
    .json();
    let pending = get(
        &address,
        &format!("/api/jobs/{}/result", waiting["first_job"]),
    )
    .await;
    assert_eq!(pending.status, 404);
    assert!(
        pending.json()["error"]
            .as_str()
            .unwrap()
            .contains("is pending: it has no result until it finishes"),
        "{pending:?}"
    );
    let unknown = get(&address, "/api/jobs/99999/result").await;
    assert_eq!(
        (unknown.status, unknown.json()["error"].clone()),
        (404, json!("no job 99999"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_cursors_and_unknown_batches_get_errors_naming_them() {
    let (_cluster, address) = start(1).await;
    let called = post_json(&address, "/api/call", &[], &json!({"handler": "noop"}))
        .await
        .json();
    let last = called["cursor"].as_u64().unwrap();
    let batch = called["batch"].as_u64().unwrap();

    for path in ["/api/batches/999/results", "/api/batches/999/events"] {
        let answer = get(&address, path).await;
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
        assert_eq!(answer.json()["error"], "no batch 999", "{path}");
    }
    let beyond = last + 100;
    for (path, field) in [
        (format!("/api/batches/{batch}/results?after=abc"), "after"),
        (format!("/api/results?after={beyond}"), "after"),
        (format!("/api/batches/{batch}/results?limit=0"), "limit"),
        ("/api/results?limit=many".to_string(), "limit"),
        (format!("/api/batches/{batch}/events?after=-3"), "after"),
        (format!("/api/events?after={beyond}"), "after"),
    ] {
        let answer = get(&address, &path).await;
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
        assert_eq!(answer.json()["field"], field, "{path}: {answer:?}");
    }
    let beyond_end = get(&address, &format!("/api/results?after={beyond}"))
        .await
        .json();
    assert!(
        beyond_end["error"]
            .as_str()
            .unwrap()
            .contains("is beyond the end"),
        "{beyond_end}"
    );
    for (value, shown) in [("abc", "\"abc\""), (&*beyond.to_string(), "beyond the end")] {
        let answer = http(
            &address,
            "GET",
            &format!("/api/batches/{batch}/events"),
            &[("Last-Event-ID", value)],
            b"",
        )
        .await;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert_eq!(answer.json()["field"], "Last-Event-ID");
        let error = answer.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(shown), "{error}");
    }
}
