//! The properties the fuzz targets (`fuzz/`) check, kept here so that `cargo test` replays
//! every saved input (`fuzz/regressions/`) with the very same code. Each function panics only
//! when a property fails: on any input, nothing in here may panic otherwise.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::awareness::{AwarenessLimits, AwarenessTable};
use crate::budget::Memory;
use crate::protocol::{decode_frame, Message};
use crate::queue::{FrameQueue, QueueLimits};
use crate::room::{JoinKind, RoomCore, RoomLimits};
use crate::store::FileLog;
use crate::wake::Waker;

/// Decoding never panics; what decodes re-encodes to frames that decode the same.
pub fn codec(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    if let Ok(messages) = decode_frame(&frame) {
        for message in messages {
            if matches!(message, Message::Unknown(_)) {
                continue;
            }
            let again = decode_frame(&message.encode()).expect("a re-encoded message decodes");
            assert_eq!(again, vec![message]);
        }
    }
}

/// A room fed arbitrary frames by one member keeps serving: it never panics, and a joiner can
/// always get the whole document.
pub fn room(data: &[u8]) {
    let room = RoomCore::new("fuzz", RoomLimits::default());
    let queue = || {
        Arc::new(FrameQueue::new(
            QueueLimits::default(),
            Waker::Tokio(Arc::new(Notify::new())),
        ))
    };
    let honest = room.join(queue(), JoinKind::Peer);
    // Synced, so that it is sent what the room relays.
    room.handle(honest, Message::SyncStep1(Bytes::from_static(&[0])))
        .expect("a step 1 is answered");
    // Some real content first, so that hostile updates meet a non-empty document.
    let seed: Bytes = {
        use yrs::{Text, Transact};
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("text");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "seed");
        txn.encode_update_v1().into()
    };
    room.handle(honest, Message::Update(seed))
        .expect("an honest update applies");
    let attacker = room.join(queue(), JoinKind::Peer);
    // The input as a frame, and its bytes as an update and as a state vector.
    let bytes = Bytes::copy_from_slice(data);
    let _ = room.handle_frame(attacker, &bytes);
    let _ = room.handle(attacker, Message::Update(bytes.clone()));
    let _ = room.handle(attacker, Message::SyncStep1(bytes.clone()));
    let _ = room.handle(attacker, Message::Awareness(bytes));
    // The frame's messages again, last first, from a second member: updates that waited for
    // earlier ones meet them (or duplicates of them), then the first member leaves.
    if let Ok(messages) = decode_frame(&Bytes::copy_from_slice(data)) {
        let second = room.join(queue(), JoinKind::Peer);
        for message in messages.into_iter().rev() {
            let _ = room.handle(second, message);
        }
    }
    room.leave(attacker);
    let joiner = queue();
    let member = room.join(joiner.clone(), JoinKind::Peer);
    room.handle(member, Message::SyncStep1(Bytes::from_static(&[0])))
        .expect("a joiner's sync step 1 is answered");
    let _ = room.resync_frames();
    let _ = room.encode_state_as_update();
    // The budget holds whatever came in: the document within its quota (counted in memory),
    // the process within its limit.
    assert!(room.document_cost() <= RoomLimits::default().max_document_bytes);
    let memory = Memory::process();
    assert!(memory.used() <= memory.limit());
}

/// The awareness table takes any update without panicking and stays consistent.
pub fn awareness(data: &[u8]) {
    let mut table = AwarenessTable::default();
    let payload = Bytes::copy_from_slice(data);
    let limits = AwarenessLimits::default();
    let _ = table.apply(1, &payload, &limits);
    let _ = table.apply(2, &payload, &limits);
    // The budget: no member past its share of ids, no state past its size.
    assert!(table.len() <= 2 * limits.max_clients_per_member);
    assert!(table.bytes() <= table.len() * limits.max_state_bytes);
    if let Some(snapshot) = table.snapshot() {
        crate::awareness::decode_update(&snapshot).expect("a snapshot decodes");
    }
    table.remove_member(1);
    table.remove_member(2);
    assert!(table.is_empty());
}

/// Any bytes after a valid header load without panicking; what loads decodes, and the file is
/// left as exactly the loaded prefix.
pub fn file_log(data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("wiredb-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("log.y");
    let mut content = b"0.0.1\0".to_vec();
    content.extend_from_slice(data);
    if std::fs::write(&path, &content).is_err() {
        return;
    }
    if let Ok((_, records, _)) = FileLog::open(&path, false) {
        let (_, again, report) = FileLog::open(&path, false).expect("a cut log reopens");
        assert_eq!(records, again, "a reopened log loads the same records");
        assert_eq!(report.torn_bytes, 0, "the first open cut everything torn");
    }
    let _ = std::fs::remove_file(&path);
}

/// Replays the saved inputs of `fuzz/regressions/<target>/` through the check.
#[cfg(test)]
mod tests {
    use std::path::Path;

    fn replay(target: &str, check: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions")
            .join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("the regressions folder exists") {
            let path = entry.expect("readable entry").path();
            if path.is_file() {
                check(&std::fs::read(&path).expect("readable input"));
                count += 1;
            }
        }
        assert!(count > 0, "no saved inputs in {}", dir.display());
    }

    #[test]
    fn codec_regressions() {
        replay("codec", super::codec);
    }

    #[test]
    fn room_regressions() {
        replay("room", super::room);
    }

    #[test]
    fn awareness_regressions() {
        replay("awareness", super::awareness);
    }

    #[test]
    fn file_log_regressions() {
        replay("file_log", super::file_log);
    }
}
