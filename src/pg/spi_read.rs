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

/// The first two columns of the first row.
pub fn two<A: FromDatum + IntoDatum, B: FromDatum + IntoDatum>(
    query: &str,
    args: &[DatumWithOid<'_>],
) -> SpiResult<(Option<A>, Option<B>)> {
    Spi::connect(|client| {
        let table = client.select(query, Some(1), args)?;
        if table.is_empty() {
            return Ok((None, None));
        }
        table.first().get_two::<A, B>()
    })
}

thread_local! {
    /// Statements planned once per session, by SQL text (the plan cache
    /// re-plans them itself when a table or index they use changes).
    static PLANS: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<pgrx::spi::OwnedPreparedStatement>>> =
        Default::default();
}

/// Run a read-only `query` through a plan kept for the session: a search
/// would otherwise spend a fifth of its time planning the same statement.
pub fn select_planned<R>(
    query: &str,
    types: &[pgrx::PgOid],
    args: &[DatumWithOid<'_>],
    read: impl FnOnce(pgrx::spi::SpiTupleTable<'_>) -> SpiResult<R>,
) -> SpiResult<R> {
    Spi::connect(|client| {
        let plan = match PLANS.with(|p| p.borrow().get(query).cloned()) {
            Some(plan) => plan,
            None => {
                let plan = std::rc::Rc::new(client.prepare(query, types)?.keep());
                PLANS.with(|p| p.borrow_mut().insert(query.to_string(), plan.clone()));
                plan
            }
        };
        read(client.select(&*plan, None, args)?)
    })
}
