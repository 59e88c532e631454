//! The few MQTT 3.1.1 packets a publisher needs (OASIS standard, section 3): CONNECT, CONNACK,
//! PUBLISH at QoS 1, PUBACK, PINGREQ/PINGRESP and DISCONNECT.

/// Appends the "remaining length" variable-byte integer (section 2.2.3).
fn put_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// CONNECT with a clean session: QoS 1 delivery across reconnects is ours (we resend what was
/// not acknowledged), so no broker-side session is needed.
pub fn connect(client_id: &str, keep_alive_s: u16, user: Option<(&str, &str)>) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    let mut flags = 0x02; // clean session
    if user.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    if let Some((name, password)) = user {
        put_str(&mut body, name.as_bytes());
        put_str(&mut body, password.as_bytes());
    }
    packet(0x10, &body)
}

/// PUBLISH at QoS 1; `dup` on a resend.
pub fn publish(topic: &str, id: u16, payload: &[u8], dup: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    put_str(&mut body, topic.as_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    packet(if dup { 0x3A } else { 0x32 }, &body)
}

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// A packet from the broker that a publisher acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// CONNACK's return code (0 = accepted).
    ConnAck(u8),
    PubAck(u16),
    PingResp,
    /// Anything else, by its type nibble (ignored).
    Other(u8),
}

/// Takes one complete packet off the front of `buf`, or `Ok(None)` if more bytes are needed.
pub fn take(buf: &mut Vec<u8>) -> Result<Option<Incoming>, String> {
    let Some(&first) = buf.first() else { return Ok(None) };
    let mut length = 0usize;
    let mut header = 1;
    loop {
        let Some(&b) = buf.get(header) else { return Ok(None) };
        length += usize::from(b & 0x7F) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err("malformed remaining length from the broker".into());
        }
    }
    if buf.len() < header + length {
        return Ok(None);
    }
    let body: Vec<u8> = buf.drain(..header + length).skip(header).collect();
    let word = |b: &[u8]| b.get(..2).map(|w| u16::from_be_bytes([w[0], w[1]]));
    Ok(Some(match first >> 4 {
        2 => Incoming::ConnAck(*body.get(1).ok_or("short CONNACK")?),
        4 => Incoming::PubAck(word(&body).ok_or("short PUBACK")?),
        13 => Incoming::PingResp,
        other => Incoming::Other(other),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_variable_byte_encoding() {
        for (n, bytes) in [
            (0usize, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            put_length(&mut out, n);
            assert_eq!(out, bytes, "{n}");
        }
    }

    #[test]
    fn a_publish_reads_back_and_acks_parse_from_a_split_stream() {
        let p = publish("a/b", 0x0102, b"{}", false);
        assert_eq!(p, [0x32, 9, 0, 3, b'a', b'/', b'b', 1, 2, b'{', b'}']);
        assert_eq!(publish("a/b", 1, b"", true)[0], 0x3A);
        let mut buf = vec![0x20, 0x02, 0x00];
        assert_eq!(take(&mut buf), Ok(None));
        buf.extend_from_slice(&[0x00, 0x40, 0x02, 0x01]);
        assert_eq!(take(&mut buf), Ok(Some(Incoming::ConnAck(0))));
        assert_eq!(take(&mut buf), Ok(None));
        buf.extend_from_slice(&[0x02, 0xD0, 0x00]);
        assert_eq!(take(&mut buf), Ok(Some(Incoming::PubAck(0x0102))));
        assert_eq!(take(&mut buf), Ok(Some(Incoming::PingResp)));
        assert!(buf.is_empty());
    }

    #[test]
    fn connect_carries_the_client_and_credentials() {
        let c = connect("kestrel-1", 30, Some(("u", "p")));
        assert_eq!(c[0], 0x10);
        assert_eq!(&c[2..8], b"\x00\x04MQTT");
        assert_eq!(c[8], 4);
        assert_eq!(c[9], 0xC2);
        assert_eq!(&c[10..12], &[0, 30]);
        assert!(c.ends_with(b"\x00\x09kestrel-1\x00\x01u\x00\x01p"));
    }
}
