//! Measures the worker's S3 transfers: a file uploaded (multipart, parallel parts) and
//! downloaded (ranged, parallel parts) through drover's S3 code, next to one plain
//! single-request PUT and GET of the same bytes with the SDK.
//!
//! ```sh
//! s3s-fs --host 127.0.0.1 --port 8014 --access-key AK --secret-key SK /tmp/s3data &
//! AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SK AWS_REGION=us-east-1 \
//!   AWS_ENDPOINT_URL=http://127.0.0.1:8014 DROVER_S3_PATH_STYLE=1 \
//!   cargo run --release --example s3_throughput -- 1024
//! ```
//!
//! The argument is the size in MiB (default 1024).

use aws_sdk_s3::primitives::ByteStream;
use drover::storage::s3::{S3Settings, S3};
use std::io::Write;
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(1024), |arg| arg.parse())?;
    let size = mib * 1024 * 1024;
    let dir = tempfile::Builder::new()
        .prefix("drover-s3-throughput-")
        .tempdir_in(".")?;
    let source = dir.path().join("source.bin");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source)?);
        let block: Vec<u8> = (0..1024 * 1024)
            .map(|index: u32| (index.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for _ in 0..mib {
            file.write_all(&block)?;
        }
        file.flush()?;
    }
    let s3 = S3::connect(&S3Settings {
        path_style: std::env::var("DROVER_S3_PATH_STYLE").is_ok_and(|value| value == "1"),
        ..S3Settings::default()
    })
    .await;
    let bucket = format!("drover-throughput-{}", std::process::id());
    s3.client().create_bucket().bucket(&bucket).send().await?;
    let rate = |seconds: f64| size as f64 / (1024.0 * 1024.0) / seconds;

    let clock = Instant::now();
    s3.upload(&source, &bucket, "drover.bin")
        .await
        .map_err(anyhow::Error::msg)?;
    let upload = clock.elapsed().as_secs_f64();
    let target = dir.path().join("downloaded.bin");
    let clock = Instant::now();
    s3.download(&bucket, "drover.bin", &target)
        .await
        .map_err(anyhow::Error::msg)?;
    let download = clock.elapsed().as_secs_f64();
    anyhow::ensure!(
        std::fs::metadata(&target)?.len() == size,
        "downloaded size differs"
    );

    let clock = Instant::now();
    s3.client()
        .put_object()
        .bucket(&bucket)
        .key("plain.bin")
        .body(ByteStream::from_path(&source).await?)
        .send()
        .await?;
    let plain_upload = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let object = s3
        .client()
        .get_object()
        .bucket(&bucket)
        .key("plain.bin")
        .send()
        .await?;
    let mut body = object.body.into_async_read();
    let mut file = tokio::fs::File::create(dir.path().join("plain.bin")).await?;
    tokio::io::copy_buf(&mut body, &mut file).await?;
    let plain_download = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    std::fs::copy(&source, dir.path().join("copy.bin"))?;
    let local_copy = clock.elapsed().as_secs_f64();

    println!("{mib} MiB on this machine's disk and loopback:");
    println!(
        "  drover upload (multipart, 4 parts in flight):    {upload:6.2} s  {:7.1} MiB/s",
        rate(upload)
    );
    println!(
        "  drover download (ranged, 4 parts in flight):     {download:6.2} s  {:7.1} MiB/s",
        rate(download)
    );
    println!(
        "  plain SDK PUT, one request:                      {plain_upload:6.2} s  {:7.1} MiB/s",
        rate(plain_upload)
    );
    println!(
        "  plain SDK GET, one stream:                       {plain_download:6.2} s  {:7.1} MiB/s",
        rate(plain_download)
    );
    println!(
        "  local file copy (the disk's own pace):           {local_copy:6.2} s  {:7.1} MiB/s",
        rate(local_copy)
    );
    Ok(())
}
