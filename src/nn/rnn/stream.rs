//! Streaming: a sequence fed in chunks or steps carrying the recurrent state, equal to one
//! [`RnnBase::forward`] over the whole sequence (in eval mode, or with dropout 0).

use super::{RnnBase, RnnState};
use crate::error::Result;
use tch::Tensor;

/// A sequence fed in pieces: the concatenated outputs and the final state equal one
/// [`RnnBase::forward`] over the whole sequence (in eval mode, or with dropout 0).
pub struct Stream<'a> {
    pub(super) rnn: &'a RnnBase,
    pub(super) state: Option<RnnState>,
}

impl Stream<'_> {
    /// Feeds a chunk shaped like a forward input (`(L, N, H_in)`, batch_first or unbatched),
    /// returns its outputs and keeps the state for the next chunk.
    pub fn feed(&mut self, chunk: &Tensor) -> Result<Tensor> {
        let (out, state) = self.rnn.forward(chunk, self.state.as_ref())?;
        self.state = Some(state);
        Ok(out)
    }
    /// Feeds one step `(N, H_in)` (or `(H_in)` unbatched); returns `(N, H_out)`.
    pub fn step(&mut self, x_t: &Tensor) -> Result<Tensor> {
        let time_dim = if self.rnn.config.batch_first && x_t.dim() == 2 {
            1
        } else {
            0
        };
        let out = self.feed(&x_t.unsqueeze(time_dim))?;
        Ok(out.squeeze_dim(time_dim))
    }
    /// The carried state (None before the first chunk, unless one was given).
    pub fn state(&self) -> Option<&RnnState> {
        self.state.as_ref()
    }
    /// Replaces the carried state (restore a saved one).
    pub fn set_state(&mut self, state: Option<RnnState>) {
        self.state = state;
    }
    /// Ends the stream, returning the final state.
    pub fn into_state(self) -> Option<RnnState> {
        self.state
    }
}
