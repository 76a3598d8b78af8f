//! Property tests of the wire format: every message survives encoding and decoding, and any
//! bytes at all either decode or give an error, never a panic.

use crate::job::{
    AttemptResult, Input, JobSpec, LedgerId, Outcome, OutputObject, Outputs, SpecBytes, Task,
};
use crate::net::codec::{encode_frame, FrameCodec};
use crate::net::protocol::{
    Assignment, CancelTarget, CarriedAttempt, ClientRequest, FromCoordinator, ManifestOrder, Role,
    ToCoordinator,
};
use bytes::BytesMut;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

const LIMIT: usize = 1 << 20;

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, short: names, errors, outputs.
    ".{0,24}"
}

fn task() -> impl Strategy<Value = Task> {
    prop_oneof![
        (vec(text(), 1..4), vec((text(), text()), 0..3))
            .prop_map(|(cmd, env)| Task::Exec { cmd, env }),
        (text(), vec(any::<u8>(), 0..64))
            .prop_map(|(handler, payload)| Task::Call { handler, payload }),
    ]
}

fn job_spec() -> impl Strategy<Value = JobSpec> {
    (
        (
            any::<i32>(),
            any::<u32>(),
            vec(text(), 0..3),
            any::<u32>(),
            option::of(any::<u32>()),
        ),
        (option::of(text()), task()),
        (vec((text(), text()), 0..3), option::of((text(), text()))),
    )
        .prop_map(
            |(
                (priority, slots, requires, max_attempts, timeout_s),
                (name, task),
                (inputs, outputs),
            )| JobSpec {
                priority,
                slots,
                requires,
                max_attempts,
                timeout_s,
                name,
                task,
                inputs: inputs
                    .into_iter()
                    .map(|(from, to)| Input { from, to })
                    .collect(),
                outputs: outputs.map(|(from, to)| Outputs { from, to }),
            },
        )
}

fn output_object() -> impl Strategy<Value = OutputObject> {
    (text(), any::<u64>(), text()).prop_map(|(url, size, etag)| OutputObject { url, size, etag })
}

fn attempt_result() -> impl Strategy<Value = AttemptResult> {
    (
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            0..4u8,
            option::of(any::<i32>()),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            text(),
            option::of(text()),
            vec(output_object(), 0..3),
        ),
    )
        .prop_map(
            |(
                (lease, job, attempt, outcome, exit_code),
                (started_at_ms, duration_ms, output_tail, error, outputs),
            )| {
                AttemptResult {
                    lease,
                    job,
                    attempt,
                    outcome: [
                        Outcome::Succeeded,
                        Outcome::Failed,
                        Outcome::TimedOut,
                        Outcome::Killed,
                    ][outcome as usize],
                    exit_code,
                    started_at_ms,
                    duration_ms,
                    output_tail,
                    result: error.clone().unwrap_or_default().into_bytes(),
                    error,
                    outputs,
                    permanent: duration_ms % 2 == 0,
                    epoch: started_at_ms ^ job,
                }
            },
        )
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        (text(), vec(job_spec(), 0..4), option::of(text())).prop_map(
            |(name, jobs, idempotency_key)| ClientRequest::Submit {
                name,
                jobs,
                idempotency_key
            }
        ),
        any::<u64>().prop_map(ClientRequest::Batch),
        Just(ClientRequest::Batches),
        (any::<u64>(), any::<u64>())
            .prop_map(|(batch, timeout_ms)| ClientRequest::WaitBatch { batch, timeout_ms }),
        any::<u64>().prop_map(ClientRequest::Job),
        (option::of(any::<u64>()), any::<u64>(), any::<u32>()).prop_map(|(batch, after, limit)| {
            ClientRequest::Jobs {
                batch,
                state: None,
                after,
                limit,
            }
        }),
        Just(ClientRequest::Workers),
        any::<u64>().prop_map(|id| ClientRequest::Cancel(CancelTarget::Job(id))),
        any::<u64>().prop_map(ClientRequest::Retry),
        Just(ClientRequest::Status),
    ]
}

fn to_coordinator() -> impl Strategy<Value = ToCoordinator> {
    prop_oneof![
        (any::<u16>(), any::<bool>(), any::<[u8; 32]>()).prop_map(|(version, worker, nonce)| {
            ToCoordinator::Hello {
                version,
                role: if worker { Role::Worker } else { Role::Client },
                nonce,
            }
        }),
        any::<[u8; 32]>().prop_map(|mac| ToCoordinator::Proof { mac }),
        (
            text(),
            any::<u32>(),
            vec(text(), 0..3),
            vec(
                (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
                    |(lease, job, attempt, slots)| CarriedAttempt {
                        lease,
                        job,
                        attempt,
                        slots,
                        epoch: lease ^ job,
                    }
                ),
                0..3
            ),
            vec(attempt_result(), 0..3),
            any::<u64>()
        )
            .prop_map(|(name, slots, labels, carried, results, instance)| {
                ToCoordinator::Register {
                    name,
                    instance,
                    slots,
                    labels,
                    carried,
                    results,
                    member: None,
                }
            }),
        Just(ToCoordinator::Heartbeat),
        vec(any::<u64>(), 0..8).prop_map(ToCoordinator::Started),
        vec(attempt_result(), 0..4).prop_map(ToCoordinator::Results),
        Just(ToCoordinator::Draining),
        vec(any::<u64>(), 0..8).prop_map(ToCoordinator::ManifestsWritten),
        (any::<u64>(), client_request()).prop_map(|(id, body)| ToCoordinator::Request { id, body }),
        vec(any::<u64>(), 0..8).prop_map(ToCoordinator::Released),
    ]
}

fn from_coordinator() -> impl Strategy<Value = FromCoordinator> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(|nonce| FromCoordinator::Challenge { nonce }),
        (text(), any::<bool>())
            .prop_map(|(reason, permanent)| FromCoordinator::Refused { reason, permanent }),
        (any::<u64>(), any::<u64>()).prop_map(|(heartbeat_interval_ms, max_result_bytes)| {
            FromCoordinator::Registered {
                heartbeat_interval_ms,
                max_result_bytes,
            }
        }),
        vec(
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                job_spec()
            ),
            0..3
        )
        .prop_map(|jobs| {
            FromCoordinator::Assign(
                jobs.into_iter()
                    .map(|(lease, job, batch, attempt, spec)| Assignment {
                        lease,
                        job,
                        batch,
                        attempt,
                        spec: SpecBytes::encode(&spec),
                        ledger: LedgerId(lease ^ job),
                        epoch: job.rotate_left(7),
                    })
                    .collect(),
            )
        }),
        vec(any::<u64>(), 0..8).prop_map(FromCoordinator::Kill),
        vec(any::<u64>(), 0..8).prop_map(FromCoordinator::Release),
        vec(
            (
                any::<u64>(),
                any::<u64>(),
                text(),
                text(),
                vec(output_object(), 0..2)
            ),
            0..2
        )
        .prop_map(|orders| {
            FromCoordinator::WriteManifests(
                orders
                    .into_iter()
                    .map(|(job, lease, from, to, objects)| ManifestOrder {
                        job,
                        lease,
                        outputs: Outputs { from, to },
                        objects,
                        ledger: LedgerId(lease.rotate_left(7)),
                    })
                    .collect(),
            )
        }),
        vec(any::<u64>(), 0..8).prop_map(FromCoordinator::Acked),
        vec(any::<u64>(), 0..8).prop_map(FromCoordinator::Recorded),
    ]
}

/// Decodes every frame in `bytes` with the coordinator's codec until it needs more or fails.
fn decode_all<T: serde::de::DeserializeOwned, Out>(bytes: &[u8]) -> Vec<T> {
    let mut codec = FrameCodec::<T, Out>::new(LIMIT);
    let mut buffer = BytesMut::from(bytes);
    let mut decoded = Vec::new();
    while let Ok(Some(message)) = codec.decode(&mut buffer) {
        decoded.push(message);
    }
    decoded
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn messages_to_the_coordinator_survive_a_frame(message in to_coordinator()) {
        let mut frame = BytesMut::new();
        encode_frame(&message, &mut frame, LIMIT).unwrap();
        let decoded = decode_all::<ToCoordinator, FromCoordinator>(&frame);
        prop_assert_eq!(decoded, vec![message]);
    }

    #[test]
    fn messages_from_the_coordinator_survive_a_frame(message in from_coordinator()) {
        let mut codec = FrameCodec::<ToCoordinator, FromCoordinator>::new(LIMIT);
        let mut frame = BytesMut::new();
        codec.encode(message.clone(), &mut frame).unwrap();
        let decoded = decode_all::<FromCoordinator, ToCoordinator>(&frame);
        prop_assert_eq!(decoded, vec![message]);
    }

    #[test]
    fn job_specs_survive_their_stored_bytes(spec in job_spec()) {
        let bytes = SpecBytes::encode(&spec);
        prop_assert_eq!(bytes.decode().unwrap(), spec.clone());
        let placement = bytes.placement().unwrap();
        prop_assert_eq!((placement.priority, placement.slots, placement.max_attempts), (spec.priority, spec.slots, spec.max_attempts));
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode_all::<ToCoordinator, FromCoordinator>(&bytes);
        let _ = decode_all::<FromCoordinator, ToCoordinator>(&bytes);
        let _ = postcard::from_bytes::<ToCoordinator>(&bytes);
        let _ = SpecBytes::from_bytes(&bytes).placement();
        let _ = SpecBytes::from_bytes(&bytes).decode();
    }

    #[test]
    fn any_bytes_behind_a_valid_length_decode_or_fail(body in vec(any::<u8>(), 0..512)) {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        let mut codec = FrameCodec::<ToCoordinator, FromCoordinator>::new(LIMIT);
        let mut buffer = BytesMut::from(&frame[..]);
        // A whole frame is there: it is a message or an error, never "need more".
        prop_assert!(!matches!(codec.decode(&mut buffer), Ok(None)));
    }

    #[test]
    fn any_text_is_a_job_line_or_an_error(line in ".{0,200}") {
        let _ = crate::jobfile::parse_line(1, &line);
    }
}
