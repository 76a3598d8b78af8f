//! Length-prefixed postcard frames: a 4-byte big-endian length, then that many bytes of postcard.
//!
//! One codec serves the coordinator, the worker and the client; it is the only code that turns
//! messages into bytes and back. A frame longer than the configured maximum is refused before any
//! of it is buffered, so a hostile length prefix costs nothing.

use bytes::{Buf, BufMut, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of the length prefix.
const PREFIX_LEN: usize = 4;

/// The default largest frame, in bytes, either way.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame above the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer speaks HTTP: what would be a frame's length is the start of an HTTP request or
    /// answer (a browser at the protocol port, a client at the HTTP port).
    #[error("the peer speaks HTTP, not drover's protocol")]
    Http,
    /// The bytes are not a message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(postcard::Error),
    /// A message could not be encoded (it cannot happen for drover's types short of a bug).
    #[error("cannot encode frame: {0}")]
    Encode(postcard::Error),
}

/// Decodes frames of `In` and encodes frames of `Out`.
pub struct FrameCodec<In, Out> {
    max_frame: usize,
    types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec that refuses frames above `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameCodec {
            max_frame,
            types: PhantomData,
        }
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        let Some(prefix) = src.get(..PREFIX_LEN) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if size > self.max_frame {
            if is_http(prefix) {
                return Err(CodecError::Http);
            }
            return Err(CodecError::TooLarge {
                size,
                limit: self.max_frame,
            });
        }
        if src.len() < PREFIX_LEN + size {
            src.reserve(PREFIX_LEN + size - src.len());
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        let body = src.split_to(size);
        postcard::from_bytes(&body)
            .map(Some)
            .map_err(CodecError::Malformed)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(CodecError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed in the middle of a frame ({} bytes left over)",
                    src.len()
                ),
            ))),
        }
    }
}

/// Whether a length prefix is the first four bytes of an HTTP request or answer. Any of these
/// read as a length is above a gigabyte, so no frame a limit lets through is mistaken for one.
fn is_http(prefix: &[u8]) -> bool {
    const STARTS: [&[u8; 4]; 9] = [
        b"HTTP", b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN",
    ];
    STARTS.iter().any(|start| prefix == &start[..])
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_frame(&item, dst, self.max_frame)
    }
}

/// Appends one frame holding `item` to `dst`.
pub fn encode_frame<T: Serialize>(
    item: &T,
    dst: &mut BytesMut,
    max_frame: usize,
) -> Result<(), CodecError> {
    let start = dst.len();
    dst.put_u32(0);
    // Serialize straight into the buffer: no intermediate Vec per frame.
    let buffer = BytesFlavor(std::mem::take(dst));
    let mut buffer = postcard::serialize_with_flavor(item, buffer).map_err(CodecError::Encode)?;
    let size = buffer.len() - start - PREFIX_LEN;
    if size > max_frame {
        buffer.truncate(start);
        *dst = buffer;
        return Err(CodecError::TooLarge {
            size,
            limit: max_frame,
        });
    }
    buffer[start..start + PREFIX_LEN].copy_from_slice(&(size as u32).to_be_bytes());
    *dst = buffer;
    Ok(())
}

/// Postcard's output appended to a `BytesMut` a slice at a time: postcard's generic `Extend`
/// output goes byte by byte, which for a large frame (the list of ten thousand workers) cost
/// milliseconds of the coordinator's one thread.
struct BytesFlavor(BytesMut);

impl postcard::ser_flavors::Flavor for BytesFlavor {
    type Output = BytesMut;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.put_u8(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<BytesMut> {
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;
    use crate::net::protocol::{ClientRequest, ToCoordinator};

    type Codec = FrameCodec<ToCoordinator, ToCoordinator>;

    fn submit() -> ToCoordinator {
        ToCoordinator::Request {
            id: 7,
            body: ClientRequest::Submit {
                name: "b".into(),
                jobs: vec![
                    JobSpec::call("noop", b"hi".to_vec()),
                    JobSpec::exec(["true"]),
                ],
                idempotency_key: Some("k-1".into()),
            },
        }
    }

    #[test]
    fn frames_round_trip_even_when_split() {
        let mut codec = Codec::default();
        let mut wire = BytesMut::new();
        codec.encode(submit(), &mut wire).unwrap();
        codec.encode(ToCoordinator::Heartbeat, &mut wire).unwrap();
        let whole = wire.clone();
        // Feed one byte at a time: the decoder must wait, never misread.
        let mut partial = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in whole.iter() {
            partial.put_u8(*byte);
            while let Some(frame) = codec.decode(&mut partial).unwrap() {
                decoded.push(frame);
            }
        }
        assert_eq!(decoded, vec![submit(), ToCoordinator::Heartbeat]);
        assert!(partial.is_empty());
    }

    #[test]
    fn oversized_prefix_is_refused_without_buffering() {
        let mut codec = Codec::new(1024);
        let mut wire = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        match codec.decode(&mut wire) {
            Err(CodecError::TooLarge { size, limit }) => {
                assert_eq!(size, u32::MAX as usize);
                assert_eq!(limit, 1024);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(wire.capacity() < 1024 * 1024);
    }

    #[test]
    fn http_is_recognised_rather_than_read_as_a_length() {
        for start in ["HTTP/1.1 400 Bad Request\r\n", "GET / HTTP/1.1\r\n"] {
            let mut codec = Codec::default();
            let mut wire = BytesMut::from(start.as_bytes());
            assert!(matches!(codec.decode(&mut wire), Err(CodecError::Http)));
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let mut codec = Codec::default();
        let mut wire = BytesMut::new();
        wire.put_u32(5);
        wire.put_slice(&[0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            codec.decode(&mut wire),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut codec = Codec::default();
        let mut wire = BytesMut::new();
        codec.encode(submit(), &mut wire).unwrap();
        wire.truncate(wire.len() - 3);
        assert!(codec.decode_eof(&mut wire).is_err());
    }

    #[test]
    fn a_frame_is_its_length_then_the_postcard_bytes() {
        let mut wire = BytesMut::from(&b"before"[..]);
        encode_frame(&submit(), &mut wire, DEFAULT_MAX_FRAME).unwrap();
        let body = postcard::to_stdvec(&submit()).unwrap();
        assert_eq!(&wire[..6], b"before");
        assert_eq!(&wire[6..10], &(body.len() as u32).to_be_bytes());
        assert_eq!(&wire[10..], &body[..]);
    }

    #[test]
    fn encoder_refuses_frames_above_the_limit() {
        let mut codec = Codec::new(16);
        let mut wire = BytesMut::new();
        assert!(matches!(
            codec.encode(submit(), &mut wire),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(wire.is_empty());
    }
}
