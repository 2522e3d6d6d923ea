//! The [`Propagator`] trait shared by every format.

use crate::carrier::{Extractor, Injector};
use crate::context::Context;

/// Moves a [`Context`] into and out of carriers.
pub trait Propagator: Send + Sync {
    /// Write the parts of `cx` this format carries into `injector`.
    fn inject(&self, cx: &Context, injector: &mut dyn Injector);

    /// Read this format from `extractor` and return `cx` updated with what was found. An invalid
    /// header is treated as absent: the parts it would have set are left as they were in `cx`.
    fn extract(&self, extractor: &dyn Extractor, cx: Context) -> Context;

    /// The header fields this format reads and writes (prefix fields end with `*`).
    fn fields(&self) -> Vec<String>;

    /// Extract into an empty context.
    fn extract_new(&self, extractor: &dyn Extractor) -> Context {
        self.extract(extractor, Context::default())
    }
}
