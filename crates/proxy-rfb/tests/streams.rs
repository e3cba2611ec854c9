//! Whole RFB streams of every message type and encoding the parsers know, fed in one piece and
//! in arbitrary chunks: every byte comes out once, labelled with its message, message ends where
//! they are, and the observer filter keeps exactly the non-input messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proxy_rfb::{
    ClientChunk, ClientMessage, ClientParser, Negotiated, RfbConnection, RfbError, ServerMessage,
    ServerParser, encoding,
};

/// 32-bit true colour, depth 24, 8-bit channels: Tight pixels are 3 bytes.
const PIXEL_FORMAT_32: [u8; 16] = [32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0];
/// 16-bit true colour (5-6-5): Tight pixels are 2 bytes.
const PIXEL_FORMAT_16: [u8; 16] = [16, 16, 0, 1, 0, 31, 0, 63, 0, 31, 11, 5, 0, 0, 0, 0];

fn be16(value: u16) -> [u8; 2] {
    value.to_be_bytes()
}

fn be32(value: u32) -> [u8; 4] {
    value.to_be_bytes()
}

/// A client stream: 3.8 handshake with security None, then every message (input or not).
fn client_stream() -> (Vec<u8>, Vec<(ClientMessage, Vec<u8>)>) {
    let mut messages: Vec<(ClientMessage, Vec<u8>)> = vec![
        (ClientMessage::Handshake, b"RFB 003.008\n".to_vec()),
        (ClientMessage::Handshake, vec![1]),
        (ClientMessage::Handshake, vec![1]),
    ];
    let mut set_pixel_format = vec![0, 0, 0, 0];
    set_pixel_format.extend_from_slice(&PIXEL_FORMAT_16);
    messages.push((ClientMessage::SetPixelFormat, set_pixel_format));
    let mut set_encodings = vec![2, 0];
    set_encodings.extend_from_slice(&be16(4));
    for encoding in [7i32, 16, 5, -258] {
        set_encodings.extend_from_slice(&encoding.to_be_bytes());
    }
    messages.push((ClientMessage::SetEncodings, set_encodings));
    messages.push((
        ClientMessage::FramebufferUpdateRequest,
        vec![3, 0, 0, 0, 0, 0, 3, 32, 2, 88],
    ));
    messages.push((ClientMessage::KeyEvent, vec![4, 1, 0, 0, 0, 0, 0, 0x61]));
    messages.push((ClientMessage::PointerEvent, vec![5, 1, 0, 10, 0, 20]));
    let mut cut = vec![6, 0, 0, 0];
    cut.extend_from_slice(&be32(5));
    cut.extend_from_slice(b"hello");
    messages.push((ClientMessage::ClientCutText, cut));
    let mut extended_cut = vec![6, 0, 0, 0];
    extended_cut.extend_from_slice(&(-8i32).to_be_bytes());
    extended_cut.extend_from_slice(&[0x10, 0, 0, 1, 0, 0, 0, 0]);
    messages.push((ClientMessage::ClientCutText, extended_cut));
    messages.push((
        ClientMessage::EnableContinuousUpdates,
        vec![150, 1, 0, 0, 0, 0, 3, 32, 2, 88],
    ));
    messages.push((
        ClientMessage::Fence,
        vec![248, 0, 0, 0, 0, 0, 0, 3, 3, 1, 2, 3],
    ));
    messages.push((ClientMessage::Xvp, vec![250, 0, 1, 3]));
    let mut resize = vec![251, 0, 4, 0, 3, 0, 1, 0];
    resize.extend_from_slice(&[0; 16]);
    messages.push((ClientMessage::SetDesktopSize, resize));
    messages.push((ClientMessage::Gii, vec![253, 0x80 | 1, 0, 2, 0, 0]));
    messages.push((ClientMessage::Gii, vec![253, 1, 2, 0, 0, 0]));
    messages.push((
        ClientMessage::QemuExtendedKeyEvent,
        vec![255, 0, 0, 1, 0, 0, 0, 0x61, 0, 0, 0, 30],
    ));
    messages.push((ClientMessage::QemuAudio, vec![255, 1, 0, 0]));
    messages.push((
        ClientMessage::QemuAudio,
        vec![255, 1, 0, 2, 3, 2, 0, 0, 0xac, 0x44],
    ));
    messages.push((
        ClientMessage::FramebufferUpdateRequest,
        vec![3, 1, 0, 0, 0, 0, 3, 32, 2, 88],
    ));
    let stream = messages
        .iter()
        .flat_map(|(_, bytes)| bytes.clone())
        .collect();
    (stream, messages)
}

fn rect(x: u16, y: u16, width: u16, height: u16, encoding: i32) -> Vec<u8> {
    let mut header = Vec::new();
    for value in [x, y, width, height] {
        header.extend_from_slice(&be16(value));
    }
    header.extend_from_slice(&encoding.to_be_bytes());
    header
}

/// Rectangles of every encoding, for a 32-bit pixel format (4 bytes, Tight pixels 3).
fn rectangles() -> Vec<Vec<u8>> {
    let mut rects = Vec::new();
    let mut raw = rect(0, 0, 3, 2, encoding::RAW);
    raw.extend_from_slice(&[7; 3 * 2 * 4]);
    rects.push(raw);
    let mut copy = rect(0, 0, 3, 2, encoding::COPY_RECT);
    copy.extend_from_slice(&[0, 1, 0, 2]);
    rects.push(copy);
    let mut rre = rect(0, 0, 8, 8, encoding::RRE);
    rre.extend_from_slice(&be32(2));
    rre.extend_from_slice(&[1; 4]);
    rre.extend_from_slice(&[2; 2 * (4 + 8)]);
    rects.push(rre);
    // Hextile, 20x18: four tiles (16x16, 4x16, 16x2, 4x2), each with another subencoding.
    let mut hextile = rect(0, 0, 20, 18, encoding::HEXTILE);
    hextile.push(1); // raw tile 16x16
    hextile.extend_from_slice(&[3; 16 * 16 * 4]);
    hextile.push(2 | 4 | 8); // background, foreground, two plain subrects
    hextile.extend_from_slice(&[4; 8]);
    hextile.push(2);
    hextile.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    hextile.push(8 | 16); // three coloured subrects
    hextile.push(3);
    hextile.extend_from_slice(&[5; 3 * (4 + 2)]);
    hextile.push(0); // nothing: same background
    rects.push(hextile);
    let mut zlib = rect(0, 0, 4, 4, encoding::ZLIB);
    zlib.extend_from_slice(&be32(6));
    zlib.extend_from_slice(&[9; 6]);
    rects.push(zlib);
    let mut zrle = rect(0, 0, 64, 64, encoding::ZRLE);
    zrle.extend_from_slice(&be32(3));
    zrle.extend_from_slice(&[8; 3]);
    rects.push(zrle);
    // Tight: fill, JPEG (2-byte compact length 200), basic copy under 12 bytes (raw), basic
    // copy with zlib (3-byte compact length), palette of 2 (bitmap rows), palette of 5,
    // gradient.
    let mut fill = rect(0, 0, 9, 9, encoding::TIGHT);
    fill.push(0x80);
    fill.extend_from_slice(&[1, 2, 3]);
    rects.push(fill);
    let mut jpeg = rect(0, 0, 9, 9, encoding::TIGHT);
    jpeg.push(0x90);
    jpeg.extend_from_slice(&[200 & 0x7f | 0x80, 200 >> 7]);
    jpeg.extend_from_slice(&[6; 200]);
    rects.push(jpeg);
    let mut small = rect(0, 0, 1, 3, encoding::TIGHT);
    small.push(0x00);
    small.extend_from_slice(&[5; 9]);
    rects.push(small);
    let mut copy_zlib = rect(0, 0, 200, 100, encoding::TIGHT);
    copy_zlib.push(0x40 | 0x01); // explicit filter (copy), reset stream 0
    copy_zlib.push(0);
    let length: u32 = 20_000;
    copy_zlib.extend_from_slice(&[
        (length & 0x7f) as u8 | 0x80,
        ((length >> 7) & 0x7f) as u8 | 0x80,
        (length >> 14) as u8,
    ]);
    copy_zlib.extend(std::iter::repeat_n(4u8, length as usize));
    rects.push(copy_zlib);
    let mut two_colours = rect(0, 0, 10, 4, encoding::TIGHT);
    two_colours.push(0x40);
    two_colours.extend_from_slice(&[1, 1]); // palette filter, 2 colours
    two_colours.extend_from_slice(&[1, 1, 1, 2, 2, 2]);
    two_colours.extend_from_slice(&[7; 8]); // ceil(10/8) * 4 = 8 bytes: under 12, raw
    rects.push(two_colours);
    let mut five_colours = rect(0, 0, 4, 4, encoding::TIGHT);
    five_colours.push(0x40);
    five_colours.extend_from_slice(&[1, 4]);
    five_colours.extend_from_slice(&[3; 5 * 3]);
    five_colours.extend_from_slice(&[16]); // 16 bytes: compact length, then data
    five_colours.extend_from_slice(&[2; 16]);
    rects.push(five_colours);
    let mut gradient = rect(0, 0, 2, 2, encoding::TIGHT);
    gradient.push(0x40);
    gradient.push(2);
    gradient.extend_from_slice(&[12]);
    gradient.extend_from_slice(&[1; 12]);
    rects.push(gradient);
    let mut png = rect(0, 0, 5, 5, encoding::TIGHT_PNG);
    png.push(0xA0);
    png.push(4);
    png.extend_from_slice(b"\x89PNG");
    rects.push(png);
    let mut cursor = rect(1, 1, 10, 2, encoding::CURSOR);
    cursor.extend_from_slice(&[0; 10 * 2 * 4 + 2 * 2]);
    rects.push(cursor);
    let mut x_cursor = rect(1, 1, 9, 3, encoding::X_CURSOR);
    x_cursor.extend_from_slice(&[0; 6 + 2 * 2 * 3]);
    rects.push(x_cursor);
    rects.push(rect(0, 0, 0, 0, encoding::X_CURSOR));
    rects.push(rect(0, 0, 1024, 768, encoding::DESKTOP_SIZE));
    let mut extended_size = rect(0, 0, 1024, 768, encoding::EXTENDED_DESKTOP_SIZE);
    extended_size.extend_from_slice(&[2, 0, 0, 0]);
    extended_size.extend_from_slice(&[0; 32]);
    rects.push(extended_size);
    let mut name = rect(0, 0, 0, 0, encoding::DESKTOP_NAME);
    name.extend_from_slice(&be32(6));
    name.extend_from_slice(b"ubuntu");
    rects.push(name);
    let mut leds = rect(0, 0, 0, 0, encoding::QEMU_LED_STATE);
    leds.push(2);
    rects.push(leds);
    for pseudo in [
        encoding::QEMU_EXTENDED_KEY_EVENT,
        encoding::QEMU_POINTER_MOTION_CHANGE,
        encoding::QEMU_AUDIO,
        encoding::FENCE,
        encoding::CONTINUOUS_UPDATES,
        encoding::XVP,
    ] {
        rects.push(rect(0, 0, 0, 0, pseudo));
    }
    rects
}

/// A server stream: 3.8 handshake (None), ServerInit, then every message and encoding.
fn server_stream() -> (Vec<u8>, Vec<(ServerMessage, Vec<u8>)>) {
    let mut server_init = Vec::new();
    server_init.extend_from_slice(&be16(800));
    server_init.extend_from_slice(&be16(600));
    server_init.extend_from_slice(&PIXEL_FORMAT_32);
    server_init.extend_from_slice(&be32(6));
    server_init.extend_from_slice(b"ubuntu");
    let mut messages: Vec<(ServerMessage, Vec<u8>)> = vec![
        (ServerMessage::Handshake, b"RFB 003.008\n".to_vec()),
        (ServerMessage::Handshake, vec![2, 1, 2]),
        (ServerMessage::Handshake, vec![0, 0, 0, 0]),
        (ServerMessage::Handshake, server_init),
    ];
    let rects = rectangles();
    let mut update = vec![0, 0];
    update.extend_from_slice(&be16(u16::try_from(rects.len()).unwrap()));
    for rect in &rects {
        update.extend_from_slice(rect);
    }
    messages.push((ServerMessage::FramebufferUpdate, update));
    messages.push((ServerMessage::FramebufferUpdate, vec![0, 0, 0, 0]));
    // LastRect ends an update of "unknown" length.
    let mut open_ended = vec![0, 0, 0xff, 0xff];
    open_ended.extend_from_slice(&rects[1]);
    open_ended.extend_from_slice(&rect(0, 0, 0, 0, encoding::LAST_RECT));
    messages.push((ServerMessage::FramebufferUpdate, open_ended));
    let mut colour_map = vec![1, 0, 0, 0];
    colour_map.extend_from_slice(&be16(2));
    colour_map.extend_from_slice(&[0xff; 12]);
    messages.push((ServerMessage::SetColourMapEntries, colour_map));
    messages.push((ServerMessage::Bell, vec![2]));
    let mut cut = vec![3, 0, 0, 0];
    cut.extend_from_slice(&be32(3));
    cut.extend_from_slice(b"abc");
    messages.push((ServerMessage::ServerCutText, cut));
    let mut extended_cut = vec![3, 0, 0, 0];
    extended_cut.extend_from_slice(&(-4i32).to_be_bytes());
    extended_cut.extend_from_slice(&[0x01, 0, 0, 0]);
    messages.push((ServerMessage::ServerCutText, extended_cut));
    messages.push((ServerMessage::EndOfContinuousUpdates, vec![150]));
    messages.push((
        ServerMessage::Fence,
        vec![248, 0, 0, 0, 0x80, 0, 0, 1, 2, 9, 9],
    ));
    messages.push((ServerMessage::Xvp, vec![250, 0, 1, 1]));
    messages.push((ServerMessage::QemuAudio, vec![255, 1, 0, 1]));
    let mut audio = vec![255, 1, 0, 2];
    audio.extend_from_slice(&be32(4));
    audio.extend_from_slice(&[1, 2, 3, 4]);
    messages.push((ServerMessage::QemuAudio, audio));
    messages.push((ServerMessage::QemuAudio, vec![255, 1, 0, 0]));
    let stream = messages
        .iter()
        .flat_map(|(_, bytes)| bytes.clone())
        .collect();
    (stream, messages)
}

/// Messages as parsed: each kind with its bytes.
type Messages<M> = Vec<(M, Vec<u8>)>;

/// Splits `stream` at `cuts` (positions, any order, duplicates allowed).
fn chunks(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut positions: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
    positions.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for position in positions.into_iter().chain([stream.len()]) {
        chunks.push(stream[start..position].to_vec());
        start = position;
    }
    chunks
}

/// Feeds both streams (client first where the protocol needs it) and returns the messages as
/// the parsers delimited them.
fn parse_both(
    client_chunks: &[Vec<u8>],
    server_chunks: &[Vec<u8>],
) -> (Messages<ClientMessage>, Messages<ServerMessage>) {
    let mut negotiated = Negotiated::default();
    let (mut client, mut server) = (ClientParser::new(), ServerParser::new());
    let mut client_messages = Vec::new();
    let mut current = Vec::new();
    // The client's whole stream first (its handshake needs nothing of the server's here but
    // the security type it picks itself), then the server's.
    for chunk in client_chunks {
        client
            .feed(chunk, &mut negotiated, |piece| {
                current.extend_from_slice(piece.bytes);
                if piece.ends_message {
                    client_messages.push((piece.message, std::mem::take(&mut current)));
                }
            })
            .unwrap();
    }
    assert!(current.is_empty(), "a client message did not end");
    let mut server_messages = Vec::new();
    for chunk in server_chunks {
        server
            .feed(chunk, &mut negotiated, |piece| {
                current.extend_from_slice(piece.bytes);
                if piece.ends_message {
                    server_messages.push((piece.message, std::mem::take(&mut current)));
                }
            })
            .unwrap();
    }
    assert!(current.is_empty(), "a server message did not end");
    (client_messages, server_messages)
}

#[test]
fn every_message_and_encoding_is_delimited_exactly() {
    let (client, expected_client) = client_stream();
    let (server, expected_server) = server_stream();
    let (client_messages, server_messages) = parse_both(&[client], &[server]);
    assert_eq!(client_messages, expected_client);
    // ServerInit's pixel format (32-bit) replaces the 16-bit one the client set before it
    // (the client's whole stream was fed first).
    assert_eq!(server_messages, expected_server);
}

#[test]
fn a_set_pixel_format_changes_how_later_rectangles_are_read() {
    let mut negotiated = Negotiated {
        client_version: Some(proxy_rfb::Version::V3_8),
        security: Some(proxy_rfb::security::NONE),
        ..Negotiated::default()
    };
    let mut client = ClientParser::new();
    let mut set = b"RFB 003.008\n\x01\x01".to_vec();
    set.extend_from_slice(&[0, 0, 0, 0]);
    set.extend_from_slice(&PIXEL_FORMAT_16);
    client.feed(&set, &mut negotiated, |_| {}).unwrap();
    // ServerInit is parsed after; set the client's format the way it lands in practice.
    let mut server = ServerParser::new();
    let mut stream = b"RFB 003.008\n\x01\x01\x00\x00\x00\x00".to_vec();
    stream.extend_from_slice(&be16(4));
    stream.extend_from_slice(&be16(4));
    stream.extend_from_slice(&PIXEL_FORMAT_32);
    stream.extend_from_slice(&be32(0));
    server.feed(&stream, &mut negotiated, |_| {}).unwrap();
    client.feed(&set[14..], &mut negotiated, |_| {}).unwrap();
    let mut update = vec![0, 0, 0, 1];
    update.extend_from_slice(&rect(0, 0, 2, 2, encoding::RAW));
    update.extend_from_slice(&[0; 2 * 2 * 2]);
    let mut ends = 0;
    server
        .feed(&update, &mut negotiated, |piece| {
            ends += usize::from(piece.ends_message)
        })
        .unwrap();
    assert_eq!(ends, 1, "a 2x2 raw rectangle of 16-bit pixels is 8 bytes");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_chunking_parses_identically(
        client_cuts in proptest::collection::vec(any::<usize>(), 0..40),
        server_cuts in proptest::collection::vec(any::<usize>(), 0..200),
    ) {
        let (client, _) = client_stream();
        let (whole_client, _) = parse_both(std::slice::from_ref(&client), &[]);
        let (chunked_client, _) = parse_both(&chunks(&client, &client_cuts), &[]);
        prop_assert_eq!(whole_client, chunked_client);

        let (server, expected) = server_stream();
        let parse_server = |chunks: Vec<Vec<u8>>| {
            let mut negotiated = Negotiated {
                client_version: Some(proxy_rfb::Version::V3_8),
                security: Some(proxy_rfb::security::NONE),
                ..Negotiated::default()
            };
            let mut parser = ServerParser::new();
            let (mut messages, mut current) = (Vec::new(), Vec::new());
            for chunk in chunks {
                parser.feed(&chunk, &mut negotiated, |piece| {
                    current.extend_from_slice(piece.bytes);
                    if piece.ends_message {
                        messages.push((piece.message, std::mem::take(&mut current)));
                    }
                }).unwrap();
            }
            messages
        };
        prop_assert_eq!(parse_server(chunks(&server, &server_cuts)), expected);
    }

    #[test]
    fn the_observer_filter_keeps_exactly_the_non_input_messages(
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let (client, messages) = client_stream();
        let mut connection = RfbConnection::new();
        connection.server_sent(b"RFB 003.008\n").unwrap();
        let mut forwarded = Vec::new();
        let mut dropped = Vec::new();
        for chunk in chunks(&client, &cuts) {
            match connection.client_sent_as_observer(&chunk).unwrap() {
                ClientChunk::Unchanged => forwarded.extend_from_slice(&chunk),
                ClientChunk::Filtered { kept, dropped: now } => {
                    forwarded.extend_from_slice(&kept);
                    dropped.extend(now);
                }
            }
        }
        let expected: Vec<u8> = messages
            .iter()
            .filter(|(message, _)| !message.is_input())
            .flat_map(|(_, bytes)| bytes.clone())
            .collect();
        let expected_dropped: Vec<ClientMessage> = messages
            .iter()
            .map(|(message, _)| *message)
            .filter(|message| message.is_input())
            .collect();
        prop_assert_eq!(forwarded, expected);
        prop_assert_eq!(dropped, expected_dropped);
    }
}

#[test]
fn rfb_3_3_with_vnc_authentication_and_3_7_without_security_result() {
    // 3.3: the server picks VNC authentication; the client answers the challenge.
    let mut connection = RfbConnection::new();
    connection.server_sent(b"RFB 003.003\n").unwrap();
    connection.client_sent(b"RFB 003.003\n").unwrap();
    assert_eq!(
        connection.client_sent(&[0; 16]),
        Err(RfbError::OutOfTurn(
            "client data before the server's security type"
        ))
    );
    let mut connection = RfbConnection::new();
    connection.server_sent(b"RFB 003.003\n").unwrap();
    connection.client_sent(b"RFB 003.003\n").unwrap();
    connection.server_sent(&[0, 0, 0, 2]).unwrap();
    connection.server_sent(&[9; 16]).unwrap();
    connection.client_sent(&[7; 16]).unwrap();
    connection.server_sent(&[0, 0, 0, 0]).unwrap();
    let dropped = connection
        .client_sent_as_observer(&[1, 5, 0, 0, 1, 0, 1])
        .unwrap();
    assert_eq!(
        dropped,
        ClientChunk::Filtered {
            kept: vec![1],
            dropped: vec![ClientMessage::PointerEvent]
        }
    );
    let mut init = vec![0, 8, 0, 8];
    init.extend_from_slice(&PIXEL_FORMAT_32);
    init.extend_from_slice(&be32(0));
    connection.server_sent(&init).unwrap();
    assert_eq!(connection.negotiated().framebuffer, Some((8, 8)));

    // 3.7 with None: ServerInit follows the choice directly.
    let mut connection = RfbConnection::new();
    connection.server_sent(b"RFB 003.008\n").unwrap();
    connection.client_sent(b"RFB 003.007\n\x01\x01").unwrap();
    connection.server_sent(&[1, 1]).unwrap();
    connection.server_sent(&init).unwrap();
    assert_eq!(connection.negotiated().framebuffer, Some((8, 8)));
}

#[test]
fn failed_handshakes_end_the_stream() {
    let mut connection = RfbConnection::new();
    connection.server_sent(b"RFB 003.008\n").unwrap();
    connection.client_sent(b"RFB 003.008\n").unwrap();
    let mut refusal = vec![0];
    refusal.extend_from_slice(&be32(4));
    refusal.extend_from_slice(b"busy");
    connection.server_sent(&refusal).unwrap();
    assert!(connection.negotiated().failed);
    assert_eq!(connection.server_sent(&[0]), Err(RfbError::AfterFailure));

    let mut connection = RfbConnection::new();
    connection.server_sent(b"RFB 003.008\n").unwrap();
    connection.client_sent(b"RFB 003.008\n\x02").unwrap();
    connection.server_sent(&[1, 2]).unwrap();
    connection.server_sent(&[0; 16]).unwrap();
    let mut wrong_password = be32(1).to_vec();
    wrong_password.extend_from_slice(&be32(14));
    wrong_password.extend_from_slice(b"wrong password");
    connection.server_sent(&wrong_password).unwrap();
    assert!(connection.negotiated().failed);
}

#[test]
fn what_the_parsers_do_not_know_is_an_error_not_a_guess() {
    let ready = || {
        let mut connection = RfbConnection::new();
        connection.server_sent(b"RFB 003.008\n").unwrap();
        connection.client_sent(b"RFB 003.008\n\x01\x01").unwrap();
        let mut init = vec![1, 1, 0, 0, 0, 0, 0, 8, 0, 8];
        init.extend_from_slice(&PIXEL_FORMAT_32);
        init.extend_from_slice(&be32(0));
        connection.server_sent(&init).unwrap();
        connection
    };
    assert_eq!(
        ready().client_sent(&[7, 0, 0]),
        Err(RfbError::UnknownClientMessage(7))
    );
    assert_eq!(
        ready().client_sent(&[255, 9]),
        Err(RfbError::UnknownQemuMessage(9))
    );
    assert_eq!(
        ready().server_sent(&[99]),
        Err(RfbError::UnknownServerMessage(99))
    );
    let mut trle = vec![0, 0, 0, 1];
    trle.extend_from_slice(&rect(0, 0, 4, 4, 15));
    assert_eq!(
        ready().server_sent(&trle),
        Err(RfbError::UnknownEncoding(15))
    );
    let mut bad_tight = vec![0, 0, 0, 1];
    bad_tight.extend_from_slice(&rect(0, 0, 4, 4, encoding::TIGHT));
    bad_tight.push(0xB0);
    assert!(matches!(
        ready().server_sent(&bad_tight),
        Err(RfbError::Malformed(_))
    ));
    let mut connection = RfbConnection::new();
    connection.server_sent(b"RFB 003.008\n").unwrap();
    assert_eq!(
        connection.client_sent(b"RFB 003.008\n\x13"),
        Err(RfbError::UnsupportedSecurity(19))
    );
    assert_eq!(
        RfbConnection::new().client_sent(b"GET / HTTP/1.1\r\n"),
        Err(RfbError::BadVersion)
    );
    let mut connection = RfbConnection::new();
    assert_eq!(
        connection.server_sent(b"RFB 003.008\n\x01"),
        Err(RfbError::OutOfTurn(
            "server data before the client's version"
        ))
    );
}
