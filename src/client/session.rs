//! The rules of one welcomed signalling connection, free of I/O: request/ack correlation with
//! deadlines, subscription replay after a reconnect with its retries, the keep-alive ping and
//! the inactivity watchdog, and the meaning of every server frame.
//!
//! The tokio shell ([`super::driver`]) owns the socket and the clocks; it feeds this core what
//! happened (`handle_frame`, `handle_request`, `handle_timeout`, …, each with the current time)
//! and carries out what the core asks for ([`Output`]: write a frame, emit an event, answer a
//! caller, close the socket). Because time is an argument, the watchdog, replay and ack timeouts
//! are tested below with virtual time, without sleeping. The same shape as str0m's `Rtc`:
//! `poll_output` until it is empty, then sleep until `poll_timeout`.
//!
//! The connect attempt itself (socket, TLS, waiting for the welcome, backoff between attempts)
//! stays in the shell: it is I/O from end to end.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tracing::{debug, info, warn};

use super::error::ClientError;
use super::events::{ClientEvent, PresencePeer};
use super::requests::RequestTable;
use crate::protocol::PresenceEntry;
use crate::protocol::server_frames::{ServerFrameIn, parse_server_frame};

/// Re-subscribe retries per channel per connection, as in the official SDKs.
pub const RESUBSCRIBE_RETRIES: u32 = 3;
/// Floor of the heartbeat interval.
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
/// The client's own inactivity close: the code the official SDKs use when their watchdog fires.
pub(super) const INACTIVITY_CLOSE: u16 = 4000;

/// Client → server frames, serialised compactly in wire field order.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum OutFrame<'a> {
    Subscribe {
        channel: &'a str,
        #[serde(rename = "requestId")]
        request_id: &'a str,
        /// Only written when true, like the official builders.
        #[serde(
            rename = "includeSenderMetadata",
            skip_serializing_if = "std::ops::Not::not"
        )]
        include_sender_metadata: bool,
    },
    Unsubscribe {
        channel: &'a str,
        #[serde(rename = "requestId")]
        request_id: &'a str,
    },
    Publish {
        channel: &'a str,
        data: &'a Value,
        #[serde(rename = "requestId")]
        request_id: &'a str,
    },
    Send {
        to: &'a str,
        data: &'a Value,
        #[serde(rename = "requestId")]
        request_id: &'a str,
    },
    Ping,
}

impl OutFrame<'_> {
    pub(super) fn to_text(&self) -> Result<String, ClientError> {
        // serde_json::Value cannot hold NaN/Infinity, so this only fails on a serde bug.
        serde_json::to_string(self)
            .map_err(|_| ClientError::InvalidOptions("frame serialisation failed".into()))
    }
}

/// A fresh request id (UUIDv4, as the official SDKs use).
pub(super) fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The timings a session runs with (taken from the client's options).
#[derive(Debug, Clone, Copy)]
pub(super) struct SessionConfig {
    pub ack_timeout: Duration,
    /// `Duration::ZERO` disables both the watchdog and the keep-alive ping.
    pub inactivity_timeout: Duration,
    pub resubscribe_retry_interval: Duration,
}

/// What the shell must do next. `R` is whatever the shell uses to answer a caller (a oneshot
/// sender in the driver, a plain number in tests).
#[derive(Debug)]
pub(super) enum Output<R> {
    /// Write this text frame.
    Send(String),
    /// Deliver this event to the application.
    Event(ClientEvent),
    /// Answer the caller of a request.
    Reply(R, Result<(), ClientError>),
    /// The server asked us to stay away at least this long before the next reconnect.
    RaiseBackoffFloor(Duration),
    /// Close the socket with this code; the connection is over (lost, reconnect as usual).
    Close { code: u16, reason: String },
}

/// What a request in the table is waiting on behalf of.
enum Pending<R> {
    Caller(R),
    /// An automatic re-subscribe; `tries` retries already made.
    Replay {
        channel: String,
        tries: u32,
    },
}

/// A re-subscribe due at `at`.
struct Replay {
    channel: String,
    tries: u32,
    at: Instant,
}

/// One welcomed connection's protocol state.
pub(super) struct Session<R> {
    config: SessionConfig,
    table: RequestTable<Pending<R>>,
    replays: Vec<Replay>,
    last_inbound: Instant,
    last_ping: Instant,
    /// False while the application's event queue is full: the shell is not reading the socket,
    /// so neither the ping nor the watchdog may judge the server by its silence.
    reading: bool,
    /// Set once a `Close` was emitted: nothing more is produced.
    ended: bool,
    out: VecDeque<Output<R>>,
}

impl<R> Session<R> {
    /// A session that starts at `now`; `replay` lists the channels to re-subscribe at once
    /// (after a reconnect), in subscription order.
    pub(super) fn new(config: SessionConfig, now: Instant, replay: Vec<String>) -> Self {
        Session {
            config,
            table: RequestTable::new(),
            replays: replay
                .into_iter()
                .map(|channel| Replay {
                    channel,
                    tries: 0,
                    at: now,
                })
                .collect(),
            last_inbound: now,
            last_ping: now,
            reading: true,
            ended: false,
            out: VecDeque::new(),
        }
    }

    fn watchdog(&self) -> Option<Duration> {
        (!self.config.inactivity_timeout.is_zero()).then_some(self.config.inactivity_timeout)
    }

    fn heartbeat(&self) -> Option<Duration> {
        self.watchdog().map(|w| (w / 3).max(MIN_HEARTBEAT))
    }

    /// The next thing to do, if any. Call until `None` after every `handle_*`.
    pub(super) fn poll_output(&mut self) -> Option<Output<R>> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must be called next (`None`: nothing is timed).
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let ack = self.table.next_deadline();
        let replay = self.replays.iter().map(|r| r.at).min();
        let (ping, watchdog) = if self.reading {
            (
                self.heartbeat()
                    .map(|h| self.last_inbound.max(self.last_ping) + h),
                self.watchdog().map(|w| self.last_inbound + w),
            )
        } else {
            (None, None)
        };
        [ack, replay, ping, watchdog].into_iter().flatten().min()
    }

    /// Whether the shell reads the socket (it stops while the event queue is full). Coming back
    /// counts as hearing from the server: the silence was ours.
    pub(super) fn set_reading(&mut self, reading: bool, now: Instant) {
        if reading && !self.reading {
            self.last_inbound = now;
        }
        self.reading = reading;
    }

    /// An API call: send `text` and answer `reply` when its ack, error or deadline comes.
    pub(super) fn handle_request(
        &mut self,
        request_id: String,
        text: String,
        reply: R,
        now: Instant,
    ) {
        if self.ended {
            self.out
                .push_back(Output::Reply(reply, Err(ClientError::NotConnected)));
            return;
        }
        match self.table.insert(
            request_id,
            now,
            self.config.ack_timeout,
            Pending::Caller(reply),
        ) {
            Ok(()) => self.out.push_back(Output::Send(text)),
            // A UUIDv4 clash: refuse rather than cross two replies.
            Err(Pending::Caller(reply)) => self
                .out
                .push_back(Output::Reply(reply, Err(ClientError::NotConnected))),
            Err(Pending::Replay { .. }) => {}
        }
    }

    /// A non-text frame (binary, ping, pong): proof of life only.
    pub(super) fn handle_liveness(&mut self, now: Instant) {
        self.last_inbound = now;
    }

    /// Deadlines that are due at `now`. `include_of` says whether a channel is still tracked
    /// (and with which `includeSenderMetadata`): a channel unsubscribed meanwhile is not replayed.
    pub(super) fn handle_timeout(
        &mut self,
        now: Instant,
        include_of: impl Fn(&str) -> Option<bool>,
    ) {
        if self.ended {
            return;
        }
        for (request_id, pending) in self.table.expire(now) {
            debug!(%request_id, "ack timeout");
            match pending {
                Pending::Caller(reply) => self
                    .out
                    .push_back(Output::Reply(reply, Err(ClientError::AckTimeout))),
                Pending::Replay { channel, tries } => {
                    self.replay_failed(channel, tries, "ack timeout", now)
                }
            }
        }
        let (due, later): (Vec<Replay>, Vec<Replay>) =
            self.replays.drain(..).partition(|r| r.at <= now);
        self.replays = later;
        for r in due {
            let Some(include) = include_of(&r.channel) else {
                continue;
            };
            let request_id = new_request_id();
            let Ok(text) = (OutFrame::Subscribe {
                channel: &r.channel,
                request_id: &request_id,
                include_sender_metadata: include,
            })
            .to_text() else {
                continue;
            };
            debug!(channel = %r.channel, tries = r.tries, "re-subscribing");
            let _ = self.table.insert(
                request_id,
                now,
                self.config.ack_timeout,
                Pending::Replay {
                    channel: r.channel,
                    tries: r.tries,
                },
            );
            self.out.push_back(Output::Send(text));
        }
        if !self.reading {
            return;
        }
        if let Some(w) = self.watchdog()
            && now >= self.last_inbound + w
        {
            warn!(timeout = ?w, "no inbound frame; closing 4000");
            self.end(INACTIVITY_CLOSE, "inactivity");
            return;
        }
        if let Some(h) = self.heartbeat()
            && now >= self.last_inbound.max(self.last_ping) + h
        {
            self.last_ping = now;
            if let Ok(text) = OutFrame::Ping.to_text() {
                self.out.push_back(Output::Send(text));
            }
        }
    }

    fn end(&mut self, code: u16, reason: &str) {
        self.ended = true;
        self.out.push_back(Output::Close {
            code,
            reason: reason.to_string(),
        });
    }

    /// The connection is over (`closed_by_app`: `close()` was called): every caller still
    /// waiting gets its answer. A request that may have left is `Closed` or `Disconnected`,
    /// never a silent drop.
    pub(super) fn finish(&mut self, closed_by_app: bool) {
        self.ended = true;
        for (_, pending) in self.table.drain() {
            if let Pending::Caller(reply) = pending {
                let err = if closed_by_app {
                    ClientError::Closed
                } else {
                    ClientError::Disconnected
                };
                self.out.push_back(Output::Reply(reply, Err(err)));
            }
        }
        self.replays.clear();
    }

    /// A re-subscribe was refused or timed out: retry later on this socket, or leave it for the
    /// next reconnect (the channel stays tracked either way).
    fn replay_failed(&mut self, channel: String, tries: u32, why: &str, now: Instant) {
        if tries < RESUBSCRIBE_RETRIES {
            self.replays.push(Replay {
                channel,
                tries: tries + 1,
                at: now + self.config.resubscribe_retry_interval,
            });
        } else {
            warn!(%channel, reason = why, "re-subscribe failed; will retry after the next reconnect");
        }
    }

    /// One inbound text frame.
    pub(super) fn handle_frame(&mut self, text: &str, now: Instant) {
        self.last_inbound = now;
        if self.ended {
            return;
        }
        let frame = match parse_server_frame(text) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, len = text.len(), "dropping malformed server frame");
                return;
            }
        };
        let event = match frame {
            ServerFrameIn::Welcome { .. } => {
                debug!("ignoring a second welcome");
                return;
            }
            ServerFrameIn::Pong { .. } => return,
            ServerFrameIn::Ack { request_id } => {
                match self.table.resolve(&request_id) {
                    Some(Pending::Caller(reply)) => {
                        self.out.push_back(Output::Reply(reply, Ok(())))
                    }
                    Some(Pending::Replay { channel, .. }) => debug!(%channel, "re-subscribed"),
                    None => debug!(%request_id, "late or unknown ack"),
                }
                return;
            }
            ServerFrameIn::Error {
                code,
                request_id,
                message,
            } => {
                let pending = request_id.as_deref().and_then(|id| self.table.resolve(id));
                match pending {
                    Some(Pending::Caller(reply)) => self.out.push_back(Output::Reply(
                        reply,
                        Err(ClientError::Server { code, message }),
                    )),
                    Some(Pending::Replay { channel, tries }) => {
                        self.replay_failed(channel, tries, &code, now)
                    }
                    // An old server answering our app-level ping: harmless.
                    None if request_id.is_none() && code == "unknown_type" => {}
                    None => self
                        .out
                        .push_back(Output::Event(ClientEvent::ServerError { code, message })),
                }
                return;
            }
            ServerFrameIn::Message {
                channel,
                from,
                data,
                from_metadata,
            } => ClientEvent::Message {
                channel,
                from,
                data,
                from_metadata,
            },
            ServerFrameIn::Direct {
                from,
                data,
                from_metadata,
            } => ClientEvent::Direct {
                from,
                data,
                from_metadata,
            },
            ServerFrameIn::Presence {
                channel,
                joined,
                left,
            } => ClientEvent::Presence {
                channel,
                joined: joined.into_iter().map(presence_peer).collect(),
                left: left.into_iter().map(presence_peer).collect(),
            },
            ServerFrameIn::GoingAway { retry_after_ms } => {
                info!(retry_after_ms, "server going away");
                self.out
                    .push_back(Output::RaiseBackoffFloor(Duration::from_millis(
                        retry_after_ms,
                    )));
                ClientEvent::GoingAway { retry_after_ms }
            }
        };
        self.out.push_back(Output::Event(event));
    }
}

fn presence_peer(e: PresenceEntry) -> PresencePeer {
    PresencePeer {
        peer_id: e.peer_id,
        metadata: e.metadata,
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
