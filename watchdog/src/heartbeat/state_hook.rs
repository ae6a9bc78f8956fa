//! The state hook: a program told when the heartbeat stops and when it is sent again,
//! for HA managers that do not listen to the heartbeat (Pacemaker's node health). It runs
//! on a thread of its own, so it never holds up the heartbeat. Only the latest state
//! matters: states that came while it ran are folded into the last one, and a failed
//! run is retried until the program takes it.
use std::{path::PathBuf, sync::mpsc, thread, time::Duration};

/// How often a state the program failed to take is offered again.
const RETRY: Duration = if cfg!(test) {
    Duration::from_millis(200)
} else {
    Duration::from_secs(5)
};

/// What the heartbeat does now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeartbeatState {
    Sending,
    /// Stopped, with the reason.
    Stopped(String),
}

impl HeartbeatState {
    /// The program's arguments: `sending`, or `stopped REASON`.
    fn args(&self) -> Vec<String> {
        match self {
            HeartbeatState::Sending => vec!["sending".into()],
            HeartbeatState::Stopped(reason) => vec!["stopped".into(), reason.clone()],
        }
    }
}

/// The hook's thread; tell it each state.
pub struct StateHook {
    tx: mpsc::Sender<HeartbeatState>,
}

impl StateHook {
    /// Start the thread that runs `program` (at most `timeout` a run).
    pub fn start(program: PathBuf, timeout: Duration) -> std::io::Result<StateHook> {
        let (tx, rx) = mpsc::channel::<HeartbeatState>();
        thread::Builder::new()
            .name("wd-state-hook".into())
            .spawn(move || tell_program(&program, timeout, &rx))?;
        Ok(StateHook { tx })
    }

    /// The heartbeat is in `state` now.
    pub fn tell(&self, state: HeartbeatState) {
        let _ = self.tx.send(state);
    }
}

fn tell_program(program: &std::path::Path, timeout: Duration, rx: &mpsc::Receiver<HeartbeatState>) {
    let mut failed: Option<HeartbeatState> = None;
    loop {
        let next = match &failed {
            Some(state) => match rx.recv_timeout(RETRY) {
                Ok(state) => state,
                Err(mpsc::RecvTimeoutError::Timeout) => state.clone(),
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(state) => state,
                Err(_) => return,
            },
        };
        // Only the latest state matters.
        let state = rx.try_iter().last().unwrap_or(next);
        let result = crate::program::run(program, &state.args(), b"", &[], timeout);
        match result {
            Ok(()) => {
                tracing::info!(program = %program.display(), state = ?state, "state hook ran");
                failed = None;
            }
            Err(e) => {
                tracing::warn!(program = %program.display(), state = ?state, error = %e, "state hook failed: retrying in 5 s");
                failed = Some(state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn the_program_hears_each_state_and_a_failed_one_again() {
        let dir = std::env::temp_dir().join(format!("wd-state-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let script = dir.join("hook");
        // Fails the first time it is told `stopped`, then takes it.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$*\" >> {log}\n[ \"$1\" = stopped ] && [ ! -e {log}.once ] && touch {log}.once && exit 1\nexit 0\n",
                log = log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let hook = StateHook::start(script, Duration::from_secs(5)).unwrap();
        hook.tell(HeartbeatState::Sending);
        hook.tell(HeartbeatState::Stopped("thread 7 stalled".into()));
        let deadline = Instant::now() + Duration::from_secs(5);
        let lines = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.iter().filter(|l| l.starts_with("stopped")).count() >= 2
                || Instant::now() > deadline
            {
                break lines;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stopped: Vec<&String> = lines.iter().filter(|l| l.starts_with("stopped")).collect();
        assert_eq!(stopped.len(), 2, "told again after it failed: {lines:?}");
        assert_eq!(stopped[0], "stopped thread 7 stalled");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
