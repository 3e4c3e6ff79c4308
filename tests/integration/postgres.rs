//! The PostgreSQL store backend against a real PostgreSQL 15 cluster
//! (`resetgate_tests::postgres`), started per test on a free loopback port:
//! what is specific to PostgreSQL (migrations, connection errors, TLS,
//! advisory locks across stores, leases, the lanes' audit chains). The
//! behaviour both backends share is the conformance suite's.

use resetgate_tests::postgres::Postgres;

fn connect(pg: &Postgres, password: &str) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = pg.url().parse().unwrap();
    config.password(password);
    config.connect(postgres::NoTls)
}

/// Why connecting fails; panics if it does not.
fn refused(pg: &Postgres, password: &str) -> String {
    match connect(pg, password) {
        Ok(_) => panic!("connected with {password:?}"),
        Err(e) => match e.as_db_error() {
            Some(db) => db.to_string(),
            None => e.to_string(),
        },
    }
}

#[test]
fn the_harness_gives_a_durable_cluster_with_a_password_role_that_restarts() {
    let mut pg = Postgres::start();
    assert_eq!(pg.psql("SHOW fsync"), "on");
    assert_eq!(
        pg.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'resetgate'"),
        "resetgate"
    );
    let mut client = connect(&pg, Postgres::PASSWORD).unwrap();
    client
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
        .unwrap();
    let wrong = refused(&pg, "not-the-password");
    assert!(wrong.contains("password authentication failed"), "{wrong}");
    drop(client);
    pg.stop();
    assert!(connect(&pg, Postgres::PASSWORD).is_err());
    pg.start_again();
    assert_eq!(pg.psql("SELECT v FROM t"), "kept");
    pg.stop_immediately();
    pg.start_again();
    assert_eq!(pg.psql("SELECT v FROM t"), "kept");
}

#[test]
fn the_tls_harness_accepts_the_role_over_tls_only() {
    let pg = Postgres::start_tls();
    assert_eq!(pg.psql("SHOW ssl"), "on");
    let err = refused(&pg, Postgres::PASSWORD);
    assert!(err.contains("no pg_hba.conf entry"), "{err}");
    assert!(pg.ca_file().exists());
}
