//! The project's frame header against tungstenite's, an independent implementation: both
//! format the same bytes for any header, and each parses what the other wrote to the same
//! header.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Cursor;

use proptest::prelude::*;
use proxy_wire::{FrameHeader, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader as TheirHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode as TheirOpCode;

const VALID_OPCODES: [u8; 6] = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA];

fn header() -> impl Strategy<Value = FrameHeader> {
    (
        any::<bool>(),
        any::<[bool; 3]>(),
        prop::sample::select(&VALID_OPCODES[..]),
        any::<Option<[u8; 4]>>(),
        prop_oneof![0u64..=125, 126u64..=0xFFFF, 0x1_0000u64..=(u64::MAX >> 1)],
    )
        .prop_map(
            |(is_final, reserved_bits, opcode, mask, payload_len)| FrameHeader {
                is_final,
                reserved_bits,
                opcode: OpCode::from_nibble(opcode),
                mask,
                payload_len,
            },
        )
}

fn theirs(header: &FrameHeader) -> TheirHeader {
    let [rsv1, rsv2, rsv3] = header.reserved_bits;
    TheirHeader {
        is_final: header.is_final,
        rsv1,
        rsv2,
        rsv3,
        opcode: TheirOpCode::from(header.opcode.nibble()),
        mask: header.mask,
    }
}

proptest! {
    #[test]
    fn both_implementations_agree_on_every_header(header in header()) {
        let mut ours = Vec::new();
        header.write_to(&mut ours);
        let mut their_bytes = Vec::new();
        theirs(&header).format(header.payload_len, &mut their_bytes).unwrap();
        prop_assert_eq!(&ours, &their_bytes);
        prop_assert_eq!(ours.len(), header.len());

        let (parsed, len) = FrameHeader::parse(&their_bytes).unwrap().unwrap();
        prop_assert_eq!(parsed, header);
        prop_assert_eq!(len, their_bytes.len());

        let (their_parsed, their_len) =
            TheirHeader::parse(&mut Cursor::new(&ours)).unwrap().unwrap();
        prop_assert_eq!(their_parsed, theirs(&header));
        prop_assert_eq!(their_len, header.payload_len);
    }
}
