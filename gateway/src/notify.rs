//! Notifications to the service manager (systemd's `sd_notify` protocol,
//! through the `sd-notify` crate): `READY=1` once the gateway listens,
//! `RELOADING=1` (with `MONOTONIC_USEC`, which systemd 253 and newer want)
//! and `READY=1` around a `SIGHUP` reload, `STOPPING=1` when it starts to
//! stop, each with a `STATUS=` line that `systemctl status` shows.
//!
//! Every function does nothing unless `NOTIFY_SOCKET` is set (the gateway
//! was started by systemd with `Type=notify`, or by a test that listens). A
//! notification that cannot be sent is logged, never fatal: the gateway
//! serves either way, and systemd's start timeout says the rest.

use sd_notify::NotifyState;

/// The gateway accepts connections at `url`.
pub fn ready(url: &str) {
    let status = format!("listening on {url}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// A `SIGHUP` reload starts.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    match NotifyState::monotonic_usec_now() {
        Ok(now) => states.push(now),
        Err(e) => tracing::warn!(error = %e, "cannot read the monotonic clock for systemd"),
    }
    send(&states);
}

/// A `SIGHUP` reload ended; `accepted`: it took everything (otherwise what
/// was loaded before keeps serving, and the log says why).
pub fn reloaded(url: &str, accepted: bool) {
    let status = if accepted {
        format!("listening on {url}; reloaded")
    } else {
        format!("listening on {url}; the last reload refused a file (see the log)")
    };
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// The gateway is stopping (requests under way finish first).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}
