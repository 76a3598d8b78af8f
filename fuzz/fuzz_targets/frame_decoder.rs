//! Any bytes from the network, fed to both directions' frame decoders in arbitrary splits:
//! every call returns a message, "need more" or an error, and never panics.
#![no_main]

use bytes::BytesMut;
use drover::net::codec::FrameCodec;
use drover::net::protocol::{FromCoordinator, ToCoordinator};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn feed<In: serde::de::DeserializeOwned, Out>(data: &[u8], split: usize) {
    let mut codec = FrameCodec::<In, Out>::new(1 << 20);
    let mut buffer = BytesMut::new();
    // The bytes arrive in two reads, as a socket may deliver them.
    for part in [&data[..split], &data[split..]] {
        buffer.extend_from_slice(part);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
    let _ = codec.decode_eof(&mut buffer);
}

fuzz_target!(|data: &[u8]| {
    let split = data
        .first()
        .map_or(0, |&byte| byte as usize % (data.len() + 1));
    feed::<ToCoordinator, FromCoordinator>(data, split);
    feed::<FromCoordinator, ToCoordinator>(data, split);
});
