//! A stand-in y-websocket server for measuring a Python client alone: it syncs a client with an
//! empty document, and when the client sends its first update it answers with a burst of
//! `updates` pre-encoded updates (one WebSocket message each, as a relaying server sends
//! them). The client's cost to apply them is then all there is to measure.

use std::io::Write;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wiredb_core::protocol::{decode_frame, Message, EMPTY_STATE_VECTOR, EMPTY_UPDATE};
use yrs::{Text, Transact};

use crate::sim::{EDIT_LEN, TEXT};

/// The yrs client id of the burst's author.
const AUTHOR: u64 = 1_000_000;

/// The burst: `count` appends of [`EDIT_LEN`] characters, each its own update message.
pub fn burst_frames(count: usize) -> Vec<Bytes> {
    let doc = yrs::Doc::with_client_id(AUTHOR);
    let text = doc.get_or_insert_text(TEXT);
    (0..count)
        .map(|i| {
            let mut txn = doc.transact_mut();
            let end = text.len(&txn);
            let chunk = format!("{:0width$}", i % 10_000, width = EDIT_LEN as usize);
            text.insert(&mut txn, end, &chunk);
            Message::Update(txn.encode_update_v1().into()).encode()
        })
        .collect()
}

pub async fn serve(port: u16, count: usize) -> std::io::Result<()> {
    let frames = std::sync::Arc::new(burst_frames(count));
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    println!("READY {port}");
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let frames = frames.clone();
        tokio::task::spawn_local(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let step1 = Message::SyncStep1(Bytes::from_static(EMPTY_STATE_VECTOR)).encode();
            if sink.send(WsMessage::Binary(step1)).await.is_err() {
                return;
            }
            let mut fired = false;
            while let Some(Ok(message)) = stream.next().await {
                let WsMessage::Binary(frame) = message else {
                    continue;
                };
                for message in decode_frame(&frame).unwrap_or_default() {
                    let sent = match message {
                        Message::SyncStep1(_) => {
                            let step2 = Message::SyncStep2(Bytes::from_static(EMPTY_UPDATE));
                            sink.send(WsMessage::Binary(step2.encode())).await
                        }
                        Message::Update(_) if !fired => {
                            fired = true;
                            burst(&mut sink, &frames).await
                        }
                        _ => Ok(()),
                    };
                    if sent.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

async fn burst<S>(sink: &mut S, frames: &[Bytes]) -> Result<(), S::Error>
where
    S: futures_util::Sink<WsMessage> + Unpin,
{
    for frame in frames {
        sink.feed(WsMessage::Binary(frame.clone())).await?;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Update};

    #[test]
    fn the_burst_builds_the_expected_text() {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text(TEXT);
        for frame in burst_frames(20) {
            let Message::Update(update) = &decode_frame(&frame).unwrap()[0] else {
                panic!("not an update");
            };
            doc.transact_mut()
                .apply_update(Update::decode_v1(update).unwrap())
                .unwrap();
        }
        assert_eq!(
            text.get_string(&doc.transact()).len(),
            20 * EDIT_LEN as usize
        );
    }
}
