//! The WASI a policy instance gets: no files, no network, no environment; stdout and
//! stderr go to the gateway's log. Policies are called synchronously on the proxy's
//! threads, so the `wasi:io` functions that could block are replaced by versions that
//! never block: an operation that is not ready at once traps instead of stalling a
//! worker thread.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use wasmtime::Result;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_io::bindings::wasi::io::{poll as async_poll, streams as async_streams};
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::host::HostState;

/// Add WASI to the linker, with the non-blocking `wasi:io` in place of the stock one.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    streams::add_to_linker::<HostState, NonBlockingIo>(linker, |s| NonBlocking(&mut s.table))?;
    poll::add_to_linker::<HostState, NonBlockingIo>(linker, |s| NonBlocking(&mut s.table))?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI context of one instance of `policy`.
pub fn context(policy: &Arc<str>) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(GuestOutput { policy: policy.clone(), stream: "stdout" })
        .stderr(GuestOutput { policy: policy.clone(), stream: "stderr" })
        .build()
}

/// Run a host future that should be ready at once; trap when it is not.
fn now_or_trap<F: Future>(future: F) -> Result<F::Output> {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => Err(wasmtime::format_err!("a policy may not block (wasi:io would have waited)")),
    }
}

struct NonBlockingIo;

impl HasData for NonBlockingIo {
    type Data<'a> = NonBlocking<'a>;
}

struct NonBlocking<'a>(&'a mut ResourceTable);

impl streams::Host for NonBlocking<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> Result<streams::StreamError> {
        Ok(match async_streams::Host::convert_stream_error(self.0, err)? {
            async_streams::StreamError::LastOperationFailed(e) => streams::StreamError::LastOperationFailed(e),
            async_streams::StreamError::Closed => streams::StreamError::Closed,
        })
    }
}

impl streams::HostOutputStream for NonBlocking<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> Result<()> {
        now_or_trap(async_streams::HostOutputStream::drop(self.0, stream))?
    }
    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        async_streams::HostOutputStream::check_write(self.0, stream)
    }
    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        async_streams::HostOutputStream::write(self.0, stream, bytes)
    }
    fn blocking_write_and_flush(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        now_or_trap(async_streams::HostOutputStream::blocking_write_and_flush(self.0, stream, bytes)).map_err(StreamError::Trap)?
    }
    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        now_or_trap(async_streams::HostOutputStream::blocking_write_zeroes_and_flush(self.0, stream, len)).map_err(StreamError::Trap)?
    }
    fn subscribe(&mut self, stream: Resource<DynOutputStream>) -> Result<Resource<DynPollable>> {
        async_streams::HostOutputStream::subscribe(self.0, stream)
    }
    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        async_streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }
    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        async_streams::HostOutputStream::flush(self.0, stream)
    }
    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        now_or_trap(async_streams::HostOutputStream::blocking_flush(self.0, stream)).map_err(StreamError::Trap)?
    }
    fn splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        async_streams::HostOutputStream::splice(self.0, dst, src, len)
    }
    fn blocking_splice(&mut self, dst: Resource<DynOutputStream>, src: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        now_or_trap(async_streams::HostOutputStream::blocking_splice(self.0, dst, src, len)).map_err(StreamError::Trap)?
    }
}

impl streams::HostInputStream for NonBlocking<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> Result<()> {
        now_or_trap(async_streams::HostInputStream::drop(self.0, stream))?
    }
    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        async_streams::HostInputStream::read(self.0, stream, len)
    }
    fn blocking_read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        now_or_trap(async_streams::HostInputStream::blocking_read(self.0, stream, len)).map_err(StreamError::Trap)?
    }
    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        async_streams::HostInputStream::skip(self.0, stream, len)
    }
    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        now_or_trap(async_streams::HostInputStream::blocking_skip(self.0, stream, len)).map_err(StreamError::Trap)?
    }
    fn subscribe(&mut self, stream: Resource<DynInputStream>) -> Result<Resource<DynPollable>> {
        async_streams::HostInputStream::subscribe(self.0, stream)
    }
}

impl poll::Host for NonBlocking<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> Result<Vec<u32>> {
        now_or_trap(async_poll::Host::poll(self.0, pollables))?
    }
}

impl poll::HostPollable for NonBlocking<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> Result<bool> {
        now_or_trap(async_poll::HostPollable::ready(self.0, pollable))?
    }
    fn block(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        now_or_trap(async_poll::HostPollable::block(self.0, pollable))?
    }
    fn drop(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        async_poll::HostPollable::drop(self.0, pollable)
    }
}

/// A guest's stdout or stderr: each line becomes a log record of the policy.
#[derive(Clone)]
struct GuestOutput {
    policy: Arc<str>,
    stream: &'static str,
}

/// Longest line kept; the rest of a longer line is dropped.
const MAX_LINE: usize = 4096;

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(GuestLines { output: self.clone(), line: BytesMut::new() })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

struct GuestLines {
    output: GuestOutput,
    line: BytesMut,
}

impl GuestLines {
    fn emit(&mut self) {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            tracing::warn!(target: "portico::policy", policy = &*self.output.policy, stream = self.output.stream, "{}", text.trim_end());
            self.line.clear();
        }
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLines {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLines {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.ends_with(b"\n") {
                self.emit();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl Drop for GuestLines {
    fn drop(&mut self) {
        self.emit();
    }
}
