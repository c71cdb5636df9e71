//! `rkt api-service`: the read-only gRPC `v1alpha.PublicAPI` over the on-disk pod and image
//! stores. There is no state of its own: every request reads the stores (on a blocking thread),
//! and `ListenEvents` turns successive snapshots of the stores into events.

mod convert;
mod events;
mod logs;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use proto::tonic::{self, Request, Response, Status};
use proto::v1alpha::public_api_server::{PublicApi, PublicApiServer};
use proto::v1alpha::{
    GetInfoRequest, GetInfoResponse, GetLogsRequest, GetLogsResponse, GlobalFlags, Info,
    InspectImageRequest, InspectImageResponse, InspectPodRequest, InspectPodResponse,
    ListImagesRequest, ListImagesResponse, ListPodsRequest, ListPodsResponse, ListenEventsRequest,
    ListenEventsResponse,
};
use tokio_stream::Stream;

use crate::error::Error;
use crate::image::Store;
use crate::pod::Pods;

/// Default `--listen` address, as the original's.
pub const DEFAULT_LISTEN: &str = "localhost:15441";
/// How often `ListenEvents` looks at the stores.
const EVENT_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// How often `GetLogs` with `follow` looks for new lines.
const LOG_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What the service reads.
#[derive(Clone, Debug)]
pub struct Settings {
    pub dir: PathBuf,
    pub local_config: PathBuf,
}

#[derive(Clone, Debug)]
struct Service {
    settings: Settings,
}

fn status(e: Error) -> Status {
    match e {
        Error::PodNotFound(_) | Error::ImageNotFound(_) => Status::not_found(e.to_string()),
        Error::AmbiguousPod(_)
        | Error::AmbiguousImage(_)
        | Error::Usage(_)
        | Error::BadDigest(_) => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(status)
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl PublicApi for Service {
    async fn get_info(
        &self,
        _: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        Ok(Response::new(GetInfoResponse {
            info: Some(Info {
                rkt_version: env!("CARGO_PKG_VERSION").to_string(),
                appc_version: String::new(),
                api_version: "1.0.0-alpha".to_string(),
                global_flags: Some(GlobalFlags {
                    dir: self.settings.dir.display().to_string(),
                    system_config_dir: "/usr/lib/rkt".to_string(),
                    local_config_dir: self.settings.local_config.display().to_string(),
                    user_config_dir: String::new(),
                    insecure_flags: "none".to_string(),
                    trust_keys_from_https: false,
                }),
            }),
        }))
    }

    async fn list_pods(
        &self,
        req: Request<ListPodsRequest>,
    ) -> Result<Response<ListPodsResponse>, Status> {
        let dir = self.settings.dir.clone();
        let req = req.into_inner();
        let pods = blocking(move || {
            let pods = Pods::open(&dir)?;
            let mut out = Vec::new();
            for p in pods.all()? {
                let pod = convert::pod(&p, req.detail);
                if req.filters.is_empty()
                    || req.filters.iter().any(|f| convert::pod_matches(&pod, f))
                {
                    out.push(pod);
                }
            }
            out.sort_by_key(|p| p.created_at);
            Ok(out)
        })
        .await?;
        Ok(Response::new(ListPodsResponse { pods }))
    }

    async fn inspect_pod(
        &self,
        req: Request<InspectPodRequest>,
    ) -> Result<Response<InspectPodResponse>, Status> {
        let dir = self.settings.dir.clone();
        let id = req.into_inner().id;
        let pod = blocking(move || Ok(convert::pod(&Pods::open(&dir)?.find(&id)?, true))).await?;
        Ok(Response::new(InspectPodResponse { pod: Some(pod) }))
    }

    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let dir = self.settings.dir.clone();
        let req = req.into_inner();
        let images = blocking(move || {
            let store = Store::open(&dir)?;
            let mut out = Vec::new();
            for rec in store.images()? {
                let img = convert::image(&store, &rec, req.detail);
                if req.filters.is_empty()
                    || req.filters.iter().any(|f| convert::image_matches(&img, f))
                {
                    out.push(img);
                }
            }
            Ok(out)
        })
        .await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn inspect_image(
        &self,
        req: Request<InspectImageRequest>,
    ) -> Result<Response<InspectImageResponse>, Status> {
        let dir = self.settings.dir.clone();
        let id = req.into_inner().id;
        let image = blocking(move || {
            let store = Store::open(&dir)?;
            let rec = store.resolve(&id)?;
            Ok(convert::image(&store, &rec, true))
        })
        .await?;
        Ok(Response::new(InspectImageResponse { image: Some(image) }))
    }

    type ListenEventsStream = Streamed<ListenEventsResponse>;

    async fn listen_events(
        &self,
        req: Request<ListenEventsRequest>,
    ) -> Result<Response<Self::ListenEventsStream>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let rx = events::spawn(self.settings.dir.clone(), filter, EVENT_POLL).await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type GetLogsStream = Streamed<GetLogsResponse>;

    async fn get_logs(
        &self,
        req: Request<GetLogsRequest>,
    ) -> Result<Response<Self::GetLogsStream>, Status> {
        let rx = logs::spawn(self.settings.dir.clone(), req.into_inner(), LOG_POLL).await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "api-service listening");
    tonic::transport::Server::builder()
        .add_service(PublicApiServer::new(Service { settings }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(|e| Error::Stage1(format!("api-service: {e}")))
}
