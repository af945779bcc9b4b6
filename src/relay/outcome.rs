//! What became of every message the relay saw, one counter per outcome, so that the counters
//! add up to what was received (shown on the status page and exported as metrics).

/// What became of one received request. [`super::Relay`] counts every request under exactly one of
/// these, so that the counters add up to the requests received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// OPTIONS answered with 200.
    OptionsAnswered,
    /// Relayed to the proxy as it came, from a trusted sender.
    RelayedTrusted,
    /// Relayed from an untrusted sender without its identity headers.
    RelayedStripped,
    /// For a registered contact, from an untrusted sender we do not relay for: treated exactly
    /// as a request for an unknown user.
    RefusedUntrusted,
    /// For no registration we hold: 404, or silence for untrusted senders if so configured.
    UnknownUser,
    /// Answered with an error: 400, 416, 483 or 500.
    Rejected,
    /// For a registered contact, from a trusted sender, but no proxy is configured.
    NoProxy,
    /// An ACK that is not relayed (ACKs are never answered).
    AckAbsorbed,
    /// Too broken to answer (not a request line, no Via, Call-ID, From, To or CSeq …).
    Malformed,
    /// Our answer to an untrusted sender would have been larger than its request: not sent.
    ReplyLargerThanRequest,
    /// Our answer to an untrusted sender found the reply budget empty.
    RepliesRateLimited,
}

impl Outcome {
    pub const ALL: [Outcome; 11] = [
        Outcome::OptionsAnswered,
        Outcome::RelayedTrusted,
        Outcome::RelayedStripped,
        Outcome::RefusedUntrusted,
        Outcome::UnknownUser,
        Outcome::Rejected,
        Outcome::NoProxy,
        Outcome::AckAbsorbed,
        Outcome::Malformed,
        Outcome::ReplyLargerThanRequest,
        Outcome::RepliesRateLimited,
    ];

    /// The name of its counter (status and metrics label).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::OptionsAnswered => "options_answered",
            Outcome::RelayedTrusted => "relayed_trusted",
            Outcome::RelayedStripped => "relayed_stripped",
            Outcome::RefusedUntrusted => "refused_untrusted",
            Outcome::UnknownUser => "unknown_user",
            Outcome::Rejected => "rejected",
            Outcome::NoProxy => "no_proxy",
            Outcome::AckAbsorbed => "ack_absorbed",
            Outcome::Malformed => "malformed",
            Outcome::ReplyLargerThanRequest => "reply_larger_than_request",
            Outcome::RepliesRateLimited => "replies_rate_limited",
        }
    }
}

/// What became of a received response that carries our relay marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// Sent back along the path in its branch.
    Relayed,
    /// Its branch does not verify with our key (forged, tampered or unreadable).
    BadMac,
    /// It did not come from the configured proxy.
    WrongSource,
    /// No proxy is configured, so we relayed nothing it could answer.
    NoProxy,
    /// The way back is gone (the connection closed, the socket is not ours) or sending failed.
    NoFlow,
    /// Verified, but the head is broken or no Via is left once ours is removed.
    Malformed,
}

impl ResponseOutcome {
    pub const ALL: [ResponseOutcome; 6] = [
        ResponseOutcome::Relayed,
        ResponseOutcome::BadMac,
        ResponseOutcome::WrongSource,
        ResponseOutcome::NoProxy,
        ResponseOutcome::NoFlow,
        ResponseOutcome::Malformed,
    ];

    /// The name of its counter (status and metrics label).
    pub fn label(self) -> &'static str {
        match self {
            ResponseOutcome::Relayed => "relayed",
            ResponseOutcome::BadMac => "bad_mac",
            ResponseOutcome::WrongSource => "wrong_source",
            ResponseOutcome::NoProxy => "no_proxy",
            ResponseOutcome::NoFlow => "no_flow",
            ResponseOutcome::Malformed => "malformed",
        }
    }
}

/// What became of every request and every relay-marked response that arrived: each one is
/// counted under exactly one outcome, so the outcomes add up to what was received.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct InboundStats {
    /// Messages that were not responses (nor CRLF keep-alives): requests and garbage.
    pub requests_received: u64,
    pub requests: RequestCounts,
    /// Responses whose top Via carried our relay marker.
    pub relay_responses_received: u64,
    pub relay_responses: ResponseCounts,
}

/// One counter per [`Outcome`].
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    pub options_answered: u64,
    pub relayed_trusted: u64,
    pub relayed_stripped: u64,
    pub refused_untrusted: u64,
    pub unknown_user: u64,
    pub rejected: u64,
    pub no_proxy: u64,
    pub ack_absorbed: u64,
    pub malformed: u64,
    pub reply_larger_than_request: u64,
    pub replies_rate_limited: u64,
}

impl RequestCounts {
    pub(super) fn slot(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::OptionsAnswered => &mut self.options_answered,
            Outcome::RelayedTrusted => &mut self.relayed_trusted,
            Outcome::RelayedStripped => &mut self.relayed_stripped,
            Outcome::RefusedUntrusted => &mut self.refused_untrusted,
            Outcome::UnknownUser => &mut self.unknown_user,
            Outcome::Rejected => &mut self.rejected,
            Outcome::NoProxy => &mut self.no_proxy,
            Outcome::AckAbsorbed => &mut self.ack_absorbed,
            Outcome::Malformed => &mut self.malformed,
            Outcome::ReplyLargerThanRequest => &mut self.reply_larger_than_request,
            Outcome::RepliesRateLimited => &mut self.replies_rate_limited,
        }
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::OptionsAnswered => self.options_answered,
            Outcome::RelayedTrusted => self.relayed_trusted,
            Outcome::RelayedStripped => self.relayed_stripped,
            Outcome::RefusedUntrusted => self.refused_untrusted,
            Outcome::UnknownUser => self.unknown_user,
            Outcome::Rejected => self.rejected,
            Outcome::NoProxy => self.no_proxy,
            Outcome::AckAbsorbed => self.ack_absorbed,
            Outcome::Malformed => self.malformed,
            Outcome::ReplyLargerThanRequest => self.reply_larger_than_request,
            Outcome::RepliesRateLimited => self.replies_rate_limited,
        }
    }

    /// All outcomes together: every request received ends in one.
    pub fn total(&self) -> u64 {
        Outcome::ALL.into_iter().map(|o| self.get(o)).sum()
    }

    /// `(label, count)` for every outcome.
    pub fn labelled(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Outcome::ALL.into_iter().map(|o| (o.label(), self.get(o)))
    }
}

/// One counter per [`ResponseOutcome`].
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ResponseCounts {
    pub relayed: u64,
    pub bad_mac: u64,
    pub wrong_source: u64,
    pub no_proxy: u64,
    pub no_flow: u64,
    pub malformed: u64,
}

impl ResponseCounts {
    pub(super) fn slot(&mut self, outcome: ResponseOutcome) -> &mut u64 {
        match outcome {
            ResponseOutcome::Relayed => &mut self.relayed,
            ResponseOutcome::BadMac => &mut self.bad_mac,
            ResponseOutcome::WrongSource => &mut self.wrong_source,
            ResponseOutcome::NoProxy => &mut self.no_proxy,
            ResponseOutcome::NoFlow => &mut self.no_flow,
            ResponseOutcome::Malformed => &mut self.malformed,
        }
    }

    pub fn get(&self, outcome: ResponseOutcome) -> u64 {
        match outcome {
            ResponseOutcome::Relayed => self.relayed,
            ResponseOutcome::BadMac => self.bad_mac,
            ResponseOutcome::WrongSource => self.wrong_source,
            ResponseOutcome::NoProxy => self.no_proxy,
            ResponseOutcome::NoFlow => self.no_flow,
            ResponseOutcome::Malformed => self.malformed,
        }
    }

    /// All outcomes together: every relay-marked response received ends in one.
    pub fn total(&self) -> u64 {
        ResponseOutcome::ALL.into_iter().map(|o| self.get(o)).sum()
    }

    /// `(label, count)` for every outcome.
    pub fn labelled(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ResponseOutcome::ALL
            .into_iter()
            .map(|o| (o.label(), self.get(o)))
    }
}
