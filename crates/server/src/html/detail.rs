//! The view of one request, as the inbox's detail pane and the email link page show it: what was
//! asked, the highlighted JSON, the options, the terms of the policy rule that governs it (its
//! quorum's progress, its deadline), and how it ended.

use super::json::highlight;
use super::segment;
use crate::services::requests::{actor_name, describe};
use countersign_core::governance::Governance;
use countersign_core::{Actor, Decision, DecisionChannel, Ending, RequestKind, RequestRecord, Timestamp, Vote};

/// The URL of a request's page in the web inbox.
pub fn href(project: &str, record: &RequestRecord) -> String {
    let kind = match record.kind {
        RequestKind::FunctionCall => "approval",
        RequestKind::HumanContact => "question",
    };
    format!("/r/{}/{kind}/{}", segment(project), segment(&record.call_id))
}

/// `2026-11-25 14:03:07 UTC`.
pub fn short_time(at: Timestamp) -> String {
    let text = at.to_rfc3339();
    format!("{} UTC", text.get(..19).unwrap_or(&text).replace('T', " "))
}

/// `Approval` or `Question`.
pub fn kind_label(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::FunctionCall => "Approval",
        RequestKind::HumanContact => "Question",
    }
}

/// An option a human may pick.
pub struct OptionView {
    pub name: String,
    pub label: String,
    pub description: String,
    pub fill: String,
    pub interactive: bool,
}

/// One person's vote toward a quorum.
pub struct VoteView {
    pub voter: String,
    pub approved: bool,
    pub channel: &'static str,
    pub at: String,
    pub comment: String,
}

impl VoteView {
    fn of(vote: &Vote) -> Self {
        let at = Timestamp::parse_rfc3339(&vote.at).map_or_else(|| vote.at.clone(), short_time);
        Self {
            voter: vote.voter.clone(),
            approved: vote.approved,
            channel: vote.channel.as_str(),
            at,
            comment: vote.comment.clone().unwrap_or_default(),
        }
    }
}

/// Approvals so far and how many complete the request, for a request whose rule asks for more
/// than one person; `None` otherwise.
pub fn quorum_progress(record: &RequestRecord, votes: &[Vote]) -> Option<(u32, u32)> {
    let needed = record.policy.as_ref().filter(|t| t.approvers.is_some())?.needed();
    let approvals = votes.iter().filter(|v| v.approved).count();
    (needed > 1).then_some((u32::try_from(approvals).unwrap_or(u32::MAX), needed))
}

/// `1 of 2 approvals: ada@example.com` (`0 of 2 approvals` before anyone voted).
pub fn progress_text(approvals: u32, needed: u32, votes: &[Vote]) -> String {
    let voters: Vec<&str> = votes.iter().filter(|v| v.approved).map(|v| v.voter.as_str()).collect();
    if voters.is_empty() {
        format!("{approvals} of {needed} approvals")
    } else {
        format!("{approvals} of {needed} approvals: {}", voters.join(", "))
    }
}

/// What a request's terms ask for: `2 approvals from group "finance"`, `2 approvals from
/// different people`; empty when one approval from anyone does.
pub fn needs_text(terms: &Governance) -> String {
    let Some(quorum) = &terms.approvers else { return String::new() };
    let count = quorum.count.max(1);
    let noun = if count == 1 { "approval" } else { "approvals" };
    match (&quorum.group, count) {
        (Some(group), _) => format!("{count} {noun} from group \"{group}\""),
        (None, 1) => String::new(),
        (None, _) => format!("{count} {noun} from different people"),
    }
}

/// `expires at 2026-11-25 14:03:07 UTC; then denied`; empty without a deadline.
pub fn deadline_text(record: &RequestRecord) -> String {
    let Some(terms) = &record.policy else { return String::new() };
    let Some(at) = terms.expires_at_us.map(Timestamp::from_micros) else { return String::new() };
    let approves = terms.on_expire.as_deref() == Some("approve") && record.kind == RequestKind::FunctionCall;
    format!("expires at {}; then {}", short_time(at), if approves { "approved" } else { "denied" })
}

/// The terms of the policy rule that governs a pending request, and where its quorum stands.
pub struct TermsView {
    /// The rule's name; empty for a deadline the agent set itself.
    pub rule: String,
    /// See [`needs_text`].
    pub needs: String,
    /// See [`progress_text`]; empty without a quorum of more than one.
    pub progress: String,
    /// The votes so far, oldest first.
    pub votes: Vec<VoteView>,
    /// See [`deadline_text`].
    pub deadline: String,
}

impl TermsView {
    /// The terms of `record`, with no votes read yet; `None` when no rule governs it.
    fn of(record: &RequestRecord) -> Option<Self> {
        let terms = record.policy.as_ref()?;
        let progress = quorum_progress(record, &[]).map(|(a, n)| progress_text(a, n, &[])).unwrap_or_default();
        Some(Self {
            rule: terms.rule.clone(),
            needs: needs_text(terms),
            progress,
            votes: Vec::new(),
            deadline: deadline_text(record),
        })
    }
}

/// How a request ended.
pub struct OutcomeView {
    pub status: &'static str,
    /// `Approved by ada@example.com`, `Rejected by policy rule "never"`, `Expired under policy
    /// rule "refunds"`, `Cancelled by the agent (API key cs_ab12)`.
    pub headline: String,
    pub by: String,
    pub channel: &'static str,
    pub at: String,
    /// The comment or the answer.
    pub text: String,
    pub option: String,
    /// The edited arguments the approval ran with, highlighted; empty when unedited.
    pub edited_html: String,
    /// The votes cast toward the quorum, when the rule asked for one.
    pub votes: Vec<VoteView>,
}

/// `Approved by X` and the like (see [`OutcomeView::headline`]).
fn headline(status: &str, decision: &Decision, actor: &Actor) -> String {
    let mut label = status.to_owned();
    if let Some(first) = label.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    match decision {
        Decision::Ended { ending: Ending::Expired, .. } => match &actor.rule {
            Some(rule) => format!("{label} under policy rule \"{rule}\""),
            None if actor.channel == DecisionChannel::Policy => format!("{label} at the agent's deadline"),
            None => label,
        },
        Decision::Ended { ending: Ending::Cancelled, .. } => match actor.channel {
            DecisionChannel::Api => format!("{label} by the agent ({})", actor_name(actor)),
            _ => format!("{label} by {}", actor_name(actor)),
        },
        _ => format!("{label} by {}", actor_name(actor)),
    }
}

impl OutcomeView {
    pub fn of(record: &RequestRecord, max_render_bytes: usize) -> Option<Self> {
        let outcome = record.outcome.as_ref()?;
        let edited_html = match &outcome.decision {
            Decision::Approved { updated_kwargs: Some(edited), .. } => highlight(edited, max_render_bytes),
            _ => String::new(),
        };
        let (text, option) = match &outcome.decision {
            Decision::Approved { comment, .. } => (comment.clone().unwrap_or_default(), None),
            Decision::Rejected { comment, option } => (comment.clone(), option.clone()),
            Decision::Answered { response, option } => (response.clone(), option.clone()),
            Decision::Ended { comment, .. } => (comment.clone(), None),
        };
        let status = describe(record);
        Some(Self {
            status,
            headline: headline(status, &outcome.decision, &outcome.decided_by),
            by: actor_name(&outcome.decided_by),
            channel: outcome.decided_by.channel.as_str(),
            at: short_time(outcome.responded_at),
            text,
            option: option.unwrap_or_default(),
            edited_html,
            votes: outcome.decided_by.votes.iter().flatten().map(VoteView::of).collect(),
        })
    }
}

/// Everything the detail view shows about one request.
pub struct Detail {
    pub href: String,
    pub project: String,
    pub is_approval: bool,
    pub kind_label: &'static str,
    pub title: String,
    pub msg: String,
    pub call_id: String,
    pub run_id: String,
    pub run_href: String,
    pub asked: String,
    pub kwargs_html: String,
    /// The arguments as indented JSON text, for the edit box.
    pub kwargs_text: String,
    pub state_html: String,
    pub channel_html: String,
    pub options: Vec<OptionView>,
    pub escalations: usize,
    pub outcome: Option<OutcomeView>,
    /// Shown above the forms, e.g. "Already decided by ...".
    pub notice: String,
    /// A validation error of the last submission.
    pub error: String,
    pub csrf: String,
    /// Who said they are looking at it (a claim, e.g. from Slack), while pending.
    pub claimed: String,
    /// The terms of the policy rule that governs it, if any.
    pub terms: Option<TermsView>,
    /// `You approved at T; ...` when the person looking has voted already (no forms then).
    pub voted: String,
}

/// How a claim is shown in the inbox: `by X via slack at T` (a Slack mention as "Slack user U...").
pub fn claim_text(claim: &countersign_store::RequestClaim) -> String {
    let by = match claim.by.strip_prefix("<@").and_then(|rest| rest.strip_suffix('>')) {
        Some(user) => format!("Slack user {user}"),
        None => claim.by.clone(),
    };
    format!("{by} via {} at {}", claim.channel, short_time(claim.at))
}

impl Detail {
    /// The view of one request; its highlighted JSON takes at most about `max_render_bytes`
    /// (`limits.max_page_render_bytes`) in all, cut with a note beyond that.
    pub fn new(project: &str, record: &RequestRecord, csrf: &str, max_render_bytes: usize) -> Self {
        let field = |name: &str, share: usize| {
            record.spec_field(name).map(|raw| highlight(raw.get(), max_render_bytes / share)).unwrap_or_default()
        };
        let text = |name: &str| {
            record.spec_field(name).and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()).unwrap_or_default()
        };
        let options = record
            .options()
            .into_iter()
            .map(|o| OptionView {
                label: o.title.clone().unwrap_or_else(|| o.name.clone()),
                description: o.description.clone().unwrap_or_default(),
                fill: o.prompt_fill.clone().unwrap_or_default(),
                interactive: o.interactive.unwrap_or(false),
                name: o.name,
            })
            .collect();
        Self {
            href: href(project, record),
            project: project.to_owned(),
            is_approval: record.kind == RequestKind::FunctionCall,
            kind_label: kind_label(record.kind),
            title: record.summary(),
            msg: text("msg"),
            call_id: record.call_id.clone(),
            run_id: record.run_id.clone(),
            run_href: format!("/history?run={}", segment(&record.run_id)),
            asked: short_time(record.requested_at),
            kwargs_html: field("kwargs", 2),
            // The edit box holds the whole value or nothing: an edit of a cut value would lose data.
            kwargs_text: record
                .spec_field("kwargs")
                .filter(|raw| raw.get().len() <= max_render_bytes / 8)
                .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
                .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                .unwrap_or_default(),
            state_html: field("state", 8),
            channel_html: field("channel", 8),
            options,
            escalations: record.escalations.len(),
            outcome: OutcomeView::of(record, max_render_bytes / 8),
            notice: String::new(),
            error: String::new(),
            csrf: csrf.to_owned(),
            claimed: String::new(),
            terms: TermsView::of(record),
            voted: String::new(),
        }
    }

    /// Shows the votes cast on a pending request toward its quorum, and whether `viewer` (an
    /// email, any case) has voted: someone who has is offered no forms, since each person
    /// votes once.
    pub fn show_votes(&mut self, record: &RequestRecord, votes: &[Vote], viewer: Option<&str>) {
        let Some(terms) = &mut self.terms else { return };
        if let Some((approvals, needed)) = quorum_progress(record, votes) {
            terms.progress = progress_text(approvals, needed, votes);
            if let Some(mine) = viewer.and_then(|v| votes.iter().find(|vote| vote.voter.eq_ignore_ascii_case(v))) {
                let more = needed.saturating_sub(approvals);
                let noun = if more == 1 { "approval" } else { "approvals" };
                let verb = if mine.approved { "approved" } else { "voted" };
                self.voted = format!(
                    "You {verb} at {}; it waits for {more} more {noun} from other people.",
                    VoteView::of(mine).at
                );
            }
        }
        terms.votes = votes.iter().map(VoteView::of).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use countersign_core::governance::Quorum;
    use countersign_core::{NewRequest, Outcome};

    fn record(quorum: Option<Quorum>, expires_at_us: Option<i64>, on_expire: &str) -> RequestRecord {
        let body = br#"{"run_id":"r","call_id":"c1","spec":{"fn":"refund","kwargs":{}}}"#;
        let new = NewRequest::parse(RequestKind::FunctionCall, body).unwrap();
        let mut record = RequestRecord::new("p1", new, Timestamp::from_micros(0));
        record.policy = Some(Governance {
            rule: "large refunds".into(),
            action: "ask".into(),
            approvers: quorum,
            separation_of_duties: false,
            owner: None,
            expires_at_us,
            expire_after: None,
            on_expire: expires_at_us.map(|_| on_expire.to_owned()),
            escalate: Vec::new(),
        });
        record
    }

    fn vote(voter: &str, comment: Option<&str>) -> Vote {
        Vote {
            voter: voter.into(),
            approved: true,
            comment: comment.map(str::to_owned),
            channel: DecisionChannel::Web,
            at: "2026-01-02T03:04:05Z".into(),
        }
    }

    #[test]
    fn a_quorum_shows_who_approved_and_what_it_needs() {
        let quorum = Quorum { group: Some("finance".into()), count: 2 };
        let record = record(Some(quorum), None, "deny");
        let mut d = Detail::new("alpha", &record, "", 1 << 20);
        let terms = d.terms.as_ref().unwrap();
        assert_eq!(
            (terms.rule.as_str(), terms.needs.as_str()),
            ("large refunds", "2 approvals from group \"finance\"")
        );
        assert_eq!(terms.progress, "0 of 2 approvals");
        assert!(terms.deadline.is_empty());
        let votes = [vote("ada@example.com", Some("ok by me"))];
        d.show_votes(&record, &votes, Some("Bob@example.com"));
        assert_eq!(d.terms.as_ref().unwrap().progress, "1 of 2 approvals: ada@example.com");
        assert_eq!(d.terms.as_ref().unwrap().votes[0].comment, "ok by me");
        assert!(d.voted.is_empty(), "bob has not voted");
        d.show_votes(&record, &votes, Some("ADA@example.com"));
        assert_eq!(d.voted, "You approved at 2026-01-02 03:04:05 UTC; it waits for 1 more approval from other people.");
    }

    #[test]
    fn one_approval_from_anyone_shows_no_progress() {
        let record = record(Some(Quorum { group: None, count: 1 }), Some(2_000_000), "approve");
        let mut d = Detail::new("alpha", &record, "", 1 << 20);
        d.show_votes(&record, &[], Some("ada@example.com"));
        let terms = d.terms.as_ref().unwrap();
        assert_eq!((terms.needs.as_str(), terms.progress.as_str()), ("", ""));
        assert_eq!(terms.deadline, "expires at 1970-01-01 00:00:02 UTC; then approved");
        assert_eq!(
            deadline_text(&self::record(None, Some(0), "deny")),
            "expires at 1970-01-01 00:00:00 UTC; then denied"
        );
    }

    #[test]
    fn endings_and_policy_decisions_read_as_such() {
        let mut record = record(None, None, "deny");
        let ended = |ending| Decision::Ended { ending, comment: "why".into() };
        let cases = [
            (ended(Ending::Expired), Actor::policy("refunds", None), "Expired under policy rule \"refunds\""),
            (ended(Ending::Expired), Actor::new(DecisionChannel::Policy), "Expired at the agent's deadline"),
            (ended(Ending::Cancelled), Actor::api_key("cs_ab12"), "Cancelled by the agent (API key cs_ab12)"),
            (
                Decision::Rejected { comment: "no".into(), option: None },
                Actor::policy("never", None),
                "Rejected by policy rule \"never\"",
            ),
        ];
        for (decision, actor, expected) in cases {
            record.outcome = Some(Outcome { responded_at: Timestamp::from_micros(0), decision, decided_by: actor });
            assert_eq!(OutcomeView::of(&record, 1 << 20).unwrap().headline, expected);
        }
    }
}
