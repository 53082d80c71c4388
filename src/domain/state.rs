//! Job states and deployment statuses. Stored as text; these enums are the one list of them.

use std::fmt;

/// Where a job is in its life. `awaiting_approval` jobs are not claimable until approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    Queued,
    AwaitingApproval,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
    Rejected,
    Expired,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::AwaitingApproval,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Interrupted,
        JobState::Rejected,
        JobState::Expired,
    ];

    /// As stored in the database and shown to people.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::AwaitingApproval => "awaiting_approval",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
            JobState::Rejected => "rejected",
            JobState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// Does the job's story end here?
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::Cancelled
                | JobState::Interrupted
                | JobState::Rejected
                | JobState::Expired
        )
    }

    /// Is `s` a final state's name?
    pub fn is_final_name(s: &str) -> bool {
        JobState::parse(s).is_some_and(JobState::is_final)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a deployment row says about the version it installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeployStatus {
    Running,
    /// Steps succeeded and the health check passed.
    Verified,
    /// Steps succeeded but the health check failed: installed, not trusted.
    Unhealthy,
    /// A step failed: what runs is unknown.
    Failed,
    Interrupted,
}

impl DeployStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeployStatus::Running => "running",
            DeployStatus::Verified => "verified",
            DeployStatus::Unhealthy => "unhealthy",
            DeployStatus::Failed => "failed",
            DeployStatus::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for DeployStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_final_ones_are_known() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("done"), None);
        assert!(JobState::is_final_name("succeeded"));
        assert!(!JobState::is_final_name("running"));
        assert!(!JobState::is_final_name("nonsense"));
    }
}
