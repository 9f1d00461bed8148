//! Read-only SPI queries. pgrx's `Spi::get_one*` run as updates, which
//! assigns a transaction id: a commit record per search on a primary, and
//! "cannot assign TransactionIds during recovery" on a standby.

use pgrx::datum::{DatumWithOid, FromDatum, IntoDatum};
use pgrx::spi::{Spi, SpiResult};

/// The first column of the first row (None for no row or NULL).
pub fn one<A: FromDatum + IntoDatum>(query: &str, args: &[DatumWithOid<'_>]) -> SpiResult<Option<A>> {
    Spi::connect(|client| {
        let table = client.select(query, Some(1), args)?;
        if table.is_empty() {
            return Ok(None);
        }
        table.first().get_one::<A>()
    })
}

thread_local! {
    /// Statements planned once per session, by SQL text (the plan cache
    /// re-plans them itself when a table or index they use changes).
    static PLANS: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<pgrx::spi::OwnedPreparedStatement>>> =
        Default::default();
}

/// Run a read-only `query` through a plan kept for the session (parameter
/// types from `args`): a search would otherwise spend a fifth of its time
/// parsing and planning the same statements. Only for fixed SQL texts (or
/// texts with few variants): each text keeps its plan for the session.
pub fn select_planned<R>(
    query: &str,
    args: &[DatumWithOid<'_>],
    read: impl FnOnce(pgrx::spi::SpiTupleTable<'_>) -> SpiResult<R>,
) -> SpiResult<R> {
    Spi::connect(|client| {
        let plan = match PLANS.with(|p| p.borrow().get(query).cloned()) {
            Some(plan) => plan,
            None => {
                let types: Vec<pgrx::PgOid> = args.iter().map(|a| pgrx::PgOid::from(a.oid())).collect();
                let plan = std::rc::Rc::new(client.prepare(query, &types)?.keep());
                PLANS.with(|p| p.borrow_mut().insert(query.to_string(), plan.clone()));
                plan
            }
        };
        read(client.select(&*plan, None, args)?)
    })
}

/// `one`, through a plan kept for the session.
pub fn one_planned<A: FromDatum + IntoDatum>(query: &str, args: &[DatumWithOid<'_>]) -> SpiResult<Option<A>> {
    select_planned(query, args, |t| {
        if t.is_empty() {
            Ok(None)
        } else {
            t.first().get_one::<A>()
        }
    })
}

/// The first two columns of the first row, through a plan kept for the session.
pub fn two_planned<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid<'_>],
) -> SpiResult<(Option<A>, Option<B>)> {
    select_planned(query, args, |t| {
        if t.is_empty() {
            Ok((None, None))
        } else {
            t.first().get_two::<A, B>()
        }
    })
}
