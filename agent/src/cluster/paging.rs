//! Reading a paginated ECS listing to its end, or failing.
//!
//! The agent counts what it lists (claims against the slot limit, tasks left on a drained
//! instance), and a count read from part of a listing is too low: a listing cut short is
//! therefore an error, never a shorter answer.

use std::future::Future;

use super::ClusterError;

/// One page of a listing: its items and the token of the next page (`None` or empty: the last).
#[derive(Debug)]
pub(crate) struct Page<T> {
    /// The items on this page, already in the agent's form.
    pub items: Vec<T>,
    /// The token that asks for the next page.
    pub next: Option<String>,
}

/// Every item of a listing, reading at most `max_pages` pages; `fetch` is given the token of the
/// page to read (`None` for the first). More pages than that is [`ClusterError::Incomplete`].
pub(crate) async fn read_all<T, F, Fut>(
    op: &'static str,
    what: &str,
    max_pages: usize,
    mut fetch: F,
) -> Result<Vec<T>, ClusterError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, ClusterError>>,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..max_pages {
        let page = fetch(token.take()).await?;
        items.extend(page.items);
        match page.next {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return Ok(items),
        }
    }
    Err(ClusterError::Incomplete {
        op,
        message: format!("{what}: still more after {max_pages} page(s) ({} item(s) read)", items.len()),
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Reads a listing of `pages` one-item pages with a cap of `cap`; also the tokens it was given.
    async fn read(pages: usize, cap: usize) -> (Result<Vec<usize>, ClusterError>, Vec<Option<String>>) {
        let seen = RefCell::new(Vec::new());
        let got = read_all("ListX", "x", cap, |token| {
            let i = {
                let mut seen = seen.borrow_mut();
                seen.push(token);
                seen.len() - 1
            };
            async move { Ok(Page { items: vec![i], next: (i + 1 < pages).then(|| format!("t{}", i + 1)) }) }
        })
        .await;
        (got, seen.into_inner())
    }

    #[tokio::test]
    async fn every_page_is_read_and_tokens_are_passed_on() {
        let (got, seen) = read(3, 3).await;
        assert_eq!(got, Ok(vec![0, 1, 2]));
        assert_eq!(seen, vec![None, Some("t1".to_owned()), Some("t2".to_owned())]);
    }

    #[tokio::test]
    async fn more_pages_than_the_cap_is_incomplete_not_short() {
        let (got, seen) = read(4, 3).await;
        match got {
            Err(e @ ClusterError::Incomplete { op: "ListX", .. }) => assert!(!e.is_retryable()),
            other => panic!("expected Incomplete, got {other:?}"),
        }
        assert_eq!(seen.len(), 3, "no page beyond the cap is asked for");
    }

    #[tokio::test]
    async fn an_empty_token_ends_the_listing() {
        let got = read_all("ListX", "x", 1, |_| async { Ok(Page { items: vec![1, 2], next: Some(String::new()) }) }).await;
        assert_eq!(got, Ok(vec![1, 2]));
    }

    #[tokio::test]
    async fn a_failed_page_fails_the_listing() {
        let got: Result<Vec<u8>, _> = read_all("ListX", "x", 5, |token| async move {
            match token {
                None => Ok(Page { items: vec![1], next: Some("t".into()) }),
                Some(_) => Err(ClusterError::Throttled { op: "ListX", message: "slow down".into() }),
            }
        })
        .await;
        assert!(matches!(got, Err(ClusterError::Throttled { .. })), "{got:?}");
    }
}
