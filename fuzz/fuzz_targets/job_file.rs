//! Any text as a job file: a list of jobs or an error naming the line, never a panic; and any
//! job it accepts survives the coordinator's stored encoding.
#![no_main]

use drover::job::SpecBytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(jobs) = drover::jobfile::parse(&text) {
        for job in jobs {
            let stored = SpecBytes::encode(&job);
            assert_eq!(stored.decode().ok(), Some(job));
        }
    }
});
