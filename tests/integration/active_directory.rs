//! The `active-directory` directory plugin against a real Samba 4 AD DC on
//! 127.0.0.1 (`resetgate_tests::samba`), one DC at a time: the tests of this
//! module form nextest's `samba` test group (`.config/nextest.toml`), and
//! the harness holds a file lock for the DC's lifetime.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use resetgate_tests::samba::{self, SambaDc};

#[test]
fn samba_dc_answers_over_verified_ldaps_and_stops_by_its_pid() {
    let dc = SambaDc::start();
    // The test CA verifies the DC's certificate for 127.0.0.1, and the
    // template's users bind with their passwords (proved by a search:
    // Samba has no WhoAmI).
    assert_eq!(
        dc.binds("jdoe@example.test", samba::JDOE_PASSWORD),
        Ok(true)
    );
    assert_eq!(
        dc.binds("jdoe@example.test", "Not-The-Passw0rd!"),
        Ok(false)
    );
    assert_eq!(
        dc.value(samba::JDOE_DN, "sAMAccountName").as_deref(),
        Some("jdoe")
    );
    // The disabled account really is disabled (userAccountControl bit 2).
    let uac: u32 = dc
        .value(samba::MDIS_DN, "userAccountControl")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(uac & 2, 2, "mdis must be disabled: {uac}");

    let pid = dc.pid();
    let status = dc.stop();
    assert_eq!(status.code(), Some(127), "samba exits with 127 on SIGTERM");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        TcpStream::connect_timeout(&"127.0.0.1:636".parse().unwrap(), Duration::from_secs(1))
            .is_err(),
        "nothing listens on 636 once the DC stopped"
    );
}
