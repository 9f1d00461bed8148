//! Who may make the server read files.

use super::errors::raise_with;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// Superusers and members of pg_read_server_files may read server files.
pub fn require_read_server_files(what: &str) {
    let superuser = unsafe { pg_sys::superuser() };
    let member = superuser
        || Spi::get_one::<bool>("SELECT pg_has_role(current_user, 'pg_read_server_files', 'USAGE')")
            .ok()
            .flatten()
            .unwrap_or(false);
    if !member {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("only superusers and members of pg_read_server_files may {what}"),
            "load the rows with plain INSERT or client-side \\copy instead",
        );
    }
}

/// Read a whole server file, or raise a clear ERROR.
pub fn read_server_file(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        super::errors::raise(
            crate::engine::EngineError::files(format!("cannot read {path}: {e}"))
                .with_hint("the path is on the database server and must be readable by its OS user"),
        )
    })
}
