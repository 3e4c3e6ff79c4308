//! The store on PostgreSQL (helper `pg` replaces this placeholder with the
//! backend; until then opening one says it is not available).

use super::{PostgresSpec, StoreError};

/// The store on PostgreSQL.
#[derive(Debug)]
pub struct PostgresStore;

impl PostgresStore {
    /// Opens the store `spec` names.
    pub fn open(spec: &PostgresSpec) -> Result<super::sled::SledStore, StoreError> {
        Err(StoreError::Open {
            location: spec.location(),
            reason: "the postgres backend is not built yet".to_owned(),
        })
    }

    /// The schema version the database holds, read without migrating;
    /// `None` before the first migration.
    pub fn stored_schema(spec: &PostgresSpec) -> Result<Option<u32>, StoreError> {
        Err(StoreError::Open {
            location: spec.location(),
            reason: "the postgres backend is not built yet".to_owned(),
        })
    }
}
