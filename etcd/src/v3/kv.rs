//! The KV service: Range, Put, DeleteRange, Txn and Compact, with etcd 3.4's request checks.

use std::collections::BTreeSet;

use proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, kv_server::Kv,
    request_op::Request as Req, response_op::Response as Resp,
};
use tonic::{Request, Response, Status};

use super::V3;
use super::error::{self, RequestError};
use crate::store::{Op, Pb, V3Out, mvcc};

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

fn check_op(op: &RequestOp) -> Result<(), RequestError> {
    match &op.request {
        Some(Req::RequestRange(r)) if r.key.is_empty() => Err(RequestError::EmptyKey),
        Some(Req::RequestPut(p)) => check_put(p),
        Some(Req::RequestDeleteRange(d)) if d.key.is_empty() => Err(RequestError::EmptyKey),
        Some(Req::RequestTxn(t)) => check_txn(t),
        _ => Ok(()),
    }
}

fn check_put(p: &PutRequest) -> Result<(), RequestError> {
    if p.key.is_empty() {
        return Err(RequestError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(RequestError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(RequestError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` and `checkIntervals`.
fn check_txn(t: &TxnRequest) -> Result<(), RequestError> {
    if t.compare.len() > MAX_TXN_OPS
        || t.success.len() > MAX_TXN_OPS
        || t.failure.len() > MAX_TXN_OPS
    {
        return Err(RequestError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(RequestError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        check_op(op)?;
    }
    intervals(&t.success)?;
    intervals(&t.failure)?;
    Ok(())
}

/// A deleted range: `[start, end)`, `end` none = unbounded; a point when `point`.
#[derive(Clone)]
struct Del {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Del {
    fn has(&self, k: &[u8]) -> bool {
        k >= self.start.as_slice() && self.end.as_ref().is_none_or(|e| k < e.as_slice())
    }
}

fn intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<Del>), RequestError> {
    let mut dels: Vec<Del> = Vec::new();
    for op in ops {
        if let Some(Req::RequestDeleteRange(d)) = &op.request {
            let end = if d.range_end.is_empty() {
                let mut e = d.key.clone();
                e.push(0);
                Some(e)
            } else if d.range_end == [0] {
                None
            } else {
                Some(d.range_end.clone())
            };
            dels.push(Del {
                start: d.key.clone(),
                end,
            });
        }
    }
    let mut puts = BTreeSet::new();
    let mut child_dels = Vec::new();
    for op in ops {
        let Some(Req::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = intervals(&t.success)?;
        let (puts_else, dels_else) = intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| d.has(k)) {
                return Err(RequestError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || dels.iter().any(|d| d.has(k)) {
                return Err(RequestError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        child_dels.extend(dels_then);
        child_dels.extend(dels_else);
    }
    dels.extend(child_dels);
    for op in ops {
        let Some(Req::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || dels.iter().any(|d| d.has(&p.key)) {
            return Err(RequestError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

impl V3 {
    /// Proposes a transaction and completes its header.
    async fn txn_write(&self, t: TxnRequest) -> Result<TxnResponse, Status> {
        let (reply, _) = self
            .app
            .node
            .write_v3(Op::Txn(Pb(t)))
            .await
            .map_err(error::raft)?;
        match reply.result.map_err(error::v3)? {
            V3Out::Txn(mut t) => {
                self.complete(&mut t.header);
                Ok(t.0)
            }
            _ => Err(Status::internal("unexpected reply from the state machine")),
        }
    }

    async fn read_barrier(&self, serializable: bool) -> Result<(), Status> {
        if serializable {
            return Ok(());
        }
        self.app.node.linearizable().await.map_err(error::raft)
    }
}

#[tonic::async_trait]
impl Kv for V3 {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let r = req.into_inner();
        if r.key.is_empty() {
            return Err(error::request(RequestError::EmptyKey));
        }
        self.read_barrier(r.serializable).await?;
        let mut resp = self
            .app
            .node
            .kv()
            .with_store(|s| s.range(&r))
            .map_err(error::v3)?;
        self.complete(&mut resp.header);
        Ok(Response::new(resp))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let p = req.into_inner();
        check_put(&p).map_err(error::request)?;
        let t = self.txn_write(mvcc::put_txn(p)).await?;
        match t.responses.into_iter().next().and_then(|r| r.response) {
            Some(Resp::ResponsePut(mut p)) => {
                p.header = t.header;
                Ok(Response::new(p))
            }
            _ => Err(Status::internal("unexpected reply from the state machine")),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let d = req.into_inner();
        if d.key.is_empty() {
            return Err(error::request(RequestError::EmptyKey));
        }
        let t = self.txn_write(mvcc::delete_txn(d)).await?;
        match t.responses.into_iter().next().and_then(|r| r.response) {
            Some(Resp::ResponseDeleteRange(mut d)) => {
                d.header = t.header;
                Ok(Response::new(d))
            }
            _ => Err(Status::internal("unexpected reply from the state machine")),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let t = req.into_inner();
        check_txn(&t).map_err(error::request)?;
        Ok(Response::new(self.txn_write(t).await?))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let c = req.into_inner();
        let (reply, _) = self
            .app
            .node
            .write_v3(Op::Compact {
                revision: c.revision,
            })
            .await
            .map_err(error::raft)?;
        reply.result.map_err(error::v3)?;
        Ok(Response::new(CompactionResponse {
            header: self.header(reply.revision),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Req::RequestPut(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Req::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: Vec::new(),
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_keys_are_refused_as_etcd_does() {
        assert_eq!(
            check_txn(&txn(vec![put("a"), put("a")], vec![])),
            Err(RequestError::DuplicateKey)
        );
        assert_eq!(
            check_txn(&txn(vec![del("a", "c"), put("b")], vec![])),
            Err(RequestError::DuplicateKey)
        );
        // then/else of a nested txn exclude each other.
        let nested = RequestOp {
            request: Some(Req::RequestTxn(txn(vec![put("a")], vec![put("a")]))),
        };
        assert_eq!(check_txn(&txn(vec![nested.clone()], vec![])), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![nested, put("a")], vec![])),
            Err(RequestError::DuplicateKey)
        );
        assert_eq!(check_txn(&txn(vec![put("a")], vec![put("a")])), Ok(()));
        assert_eq!(
            check_txn(&txn(vec![put("a"); 129], vec![])),
            Err(RequestError::TooManyOps)
        );
    }
}
