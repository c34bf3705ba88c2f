//! The README's library example, as code that compiles and runs (`scripts/test.sh` runs it, and
//! `tests/readme.rs` checks that the README shows exactly the lines between the markers).

use rnnkit::prelude::*;
use tch::{Device, Kind, Tensor};

fn main() -> rnnkit::Result<()> {
    // A state_dict as `torch.save(nn.LSTM(128, 256, 2).state_dict(), "lstm.pth")` writes it.
    let dir = std::env::temp_dir().join(format!("rnnkit-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    std::env::set_current_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    Lstm::new(RnnConfig::new(128, 256).num_layers(2))?
        .state_dict()
        .save("lstm.pth")?;

    // README:begin
    let mut lstm = Lstm::new(RnnConfig::new(128, 256).num_layers(2))?;
    let sd = StateDict::load("lstm.pth")?; // torch.save(nn.LSTM(128, 256, 2).state_dict(), ...)
    lstm.load_state_dict(&sd)?; // strict: every missing/unexpected/mis-shaped key at once
    lstm.eval(); // libtorch's inference path
    let x = Tensor::randn([64, 32, 128], (Kind::Float, Device::Cpu)); // (L, N, H_in): batch_first=false
    let (output, state) = lstm.forward(&x, None)?; // output (64, 32, 256); state.h, state.c (2, 32, 256)

    // README:end

    assert_eq!(output.size(), [64, 32, 256]);
    assert_eq!(state.h.size(), [2, 32, 256]);
    assert_eq!(state.c.as_ref().map(Tensor::size), Some(vec![2, 32, 256]));
    std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    println!(
        "quickstart: output {:?}, h_n {:?}",
        output.size(),
        state.h.size()
    );
    Ok(())
}
