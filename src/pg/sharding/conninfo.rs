//! libpq connection strings as libpq itself reads them.
//!
//! The sharding proxy refuses connection strings that carry a password
//! (they are stored where every role can read them). Matching text misses
//! what libpq decodes (`pass%77ord=` in a URI is `password=`), so the
//! keywords come from libpq's own `PQconninfoParse`, loaded at run time
//! (the server does not link libpq; PL/Proxy, which the proxy needs, does).

use crate::pg::errors::raise_with;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::ffi::{c_char, c_int, c_void, CStr, CString};

/// libpq's `PQconninfoOption`.
#[repr(C)]
struct ConninfoOption {
    keyword: *mut c_char,
    envvar: *mut c_char,
    compiled: *mut c_char,
    val: *mut c_char,
    label: *mut c_char,
    dispchar: *mut c_char,
    dispsize: c_int,
}

type ParseFn = unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> *mut ConninfoOption;
type FreeOptionsFn = unsafe extern "C" fn(*mut ConninfoOption);
type FreeMemFn = unsafe extern "C" fn(*mut c_void);

struct Libpq {
    parse: ParseFn,
    free_options: FreeOptionsFn,
    free_mem: FreeMemFn,
}

/// libpq, opened once per backend (it stays loaded, as for dblink).
fn libpq() -> &'static Libpq {
    static LIBPQ: std::sync::OnceLock<Result<Libpq, String>> = std::sync::OnceLock::new();
    let loaded = LIBPQ.get_or_init(|| unsafe {
        let handle = libc::dlopen(c"libpq.so.5".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            let why = CStr::from_ptr(libc::dlerror()).to_string_lossy().into_owned();
            return Err(why);
        }
        let symbol = |name: &CStr| {
            let found = libc::dlsym(handle, name.as_ptr());
            (!found.is_null())
                .then_some(found)
                .ok_or_else(|| format!("libpq has no {name:?}"))
        };
        Ok(Libpq {
            parse: std::mem::transmute::<*mut c_void, ParseFn>(symbol(c"PQconninfoParse")?),
            free_options: std::mem::transmute::<*mut c_void, FreeOptionsFn>(symbol(c"PQconninfoFree")?),
            free_mem: std::mem::transmute::<*mut c_void, FreeMemFn>(symbol(c"PQfreemem")?),
        })
    });
    loaded.as_ref().unwrap_or_else(|why| {
        raise_with(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
            format!("cannot load libpq to read a connection string: {why}"),
            "install libpq (Debian: libpq5)",
        )
    })
}

/// The keywords that `conninfo` sets to a non-empty value, as libpq reads
/// it (key=value pairs or a postgresql:// URI, percent-decoding included),
/// sorted. Values are never returned: the string may hold a password. A
/// string libpq cannot read is an ERROR with libpq's reason.
#[pg_extern(stable, strict, parallel_safe)]
fn inf_conninfo_keywords(conninfo: &str) -> Vec<String> {
    let lib = libpq();
    let text = CString::new(conninfo).unwrap_or_else(|_| {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "a connection string must not contain a NUL byte",
            "give a libpq connection string: 'host=... dbname=...' or 'postgresql://host/db'",
        )
    });
    let mut error: *mut c_char = std::ptr::null_mut();
    let options = unsafe { (lib.parse)(text.as_ptr(), &mut error) };
    if options.is_null() {
        let why = if error.is_null() {
            "out of memory".to_string()
        } else {
            let why = unsafe { CStr::from_ptr(error) }.to_string_lossy().trim().to_string();
            unsafe { (lib.free_mem)(error.cast()) };
            why
        };
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("libpq cannot read the connection string: {why}"),
            "give a libpq connection string: 'host=... dbname=...' or 'postgresql://host/db'",
        );
    }
    let mut keywords = Vec::new();
    unsafe {
        let mut option = options;
        while !(*option).keyword.is_null() {
            let value = (*option).val;
            if !value.is_null() && *value != 0 {
                keywords.push(CStr::from_ptr((*option).keyword).to_string_lossy().into_owned());
            }
            option = option.add(1);
        }
        (lib.free_options)(options);
    }
    keywords.sort();
    keywords
}
