//! `inf_ivf`, an index access method for real[] vectors: inverted lists
//! with 4-bit codes in pages PostgreSQL owns (shared buffers, generic WAL,
//! VACUUM), ordering by the cosine distance `<=>` with an exact re-score.
//! The algorithms are in `crate::engine::ivf`; this is the page and
//! callback layer. Imports the pg plumbing and the engine, and the worker's
//! search-copy frames (`device_copy`, `device_scan`: ranking on the shared
//! worker's GPU).

mod build;
mod check;
mod cost;
mod device_copy;
mod device_scan;
mod distance;
pub(crate) mod heap_rows;
mod info;
mod insert;
mod options;
mod pages;
mod scan;
mod shape;
mod vacuum;
pub(crate) mod vector;

use pgrx::pg_sys;
use pgrx::prelude::*;

pgrx::extension_sql!(
    r#"
CREATE FUNCTION @extschema@.inf_ivf_handler(internal) RETURNS index_am_handler
    LANGUAGE c AS 'MODULE_PATHNAME', 'inf_ivf_handler';
CREATE ACCESS METHOD inf_ivf TYPE INDEX HANDLER @extschema@.inf_ivf_handler;
COMMENT ON ACCESS METHOD inf_ivf IS 'inf_ir: inverted-file vector index on real[] (cosine distance <=>)';
CREATE OPERATOR @extschema@.<=> (
    LEFTARG = real[], RIGHTARG = real[], FUNCTION = @extschema@.inf_cosine_distance,
    COMMUTATOR = OPERATOR(@extschema@.<=>)
);
CREATE OPERATOR CLASS @extschema@.real_cosine_ops DEFAULT FOR TYPE real[] USING inf_ivf AS
    OPERATOR 1 @extschema@.<=> (real[], real[]) FOR ORDER BY pg_catalog.float_ops;
"#,
    name = "ivf_access_method",
    requires = [distance::inf_cosine_distance]
);

pub fn init() {
    options::init();
}

#[no_mangle]
pub extern "C" fn pg_finfo_inf_ivf_handler() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn inf_ivf_handler(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let mut am = PgBox::<pg_sys::IndexAmRoutine>::alloc_node(pg_sys::NodeTag::T_IndexAmRoutine);
    am.amstrategies = 0;
    am.amsupport = 0;
    am.amoptsprocnum = 0;
    am.amcanorder = false;
    am.amcanorderbyop = true;
    am.amcanbackward = false;
    am.amcanunique = false;
    am.amcanmulticol = false;
    am.amoptionalkey = true;
    am.amsearcharray = false;
    am.amsearchnulls = false;
    am.amstorage = false;
    am.amclusterable = false;
    am.ampredlocks = false;
    am.amcanparallel = false;
    am.amcaninclude = false;
    am.amusemaintenanceworkmem = false;
    am.amparallelvacuumoptions = pg_sys::VACUUM_OPTION_PARALLEL_BULKDEL as u8;
    am.amkeytype = pg_sys::InvalidOid;
    am.ambuild = Some(build::ambuild);
    am.ambuildempty = Some(build::ambuildempty);
    am.aminsert = Some(insert::aminsert);
    am.ambulkdelete = Some(vacuum::ambulkdelete);
    am.amvacuumcleanup = Some(vacuum::amvacuumcleanup);
    am.amcostestimate = Some(cost::amcostestimate);
    am.amoptions = Some(options::amoptions);
    am.amvalidate = Some(amvalidate);
    am.ambeginscan = Some(scan::ambeginscan);
    am.amrescan = Some(scan::amrescan);
    am.amgettuple = Some(scan::amgettuple);
    am.amendscan = Some(scan::amendscan);
    pg_sys::Datum::from(am.into_pg())
}

#[pg_guard]
unsafe extern "C-unwind" fn amvalidate(_opclass: pg_sys::Oid) -> bool {
    true
}
