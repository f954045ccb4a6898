//! A policy of a future contract version: the gateway must refuse it by naming the world
//! it runs and the one the component exports.

wit_bindgen::generate!({
    inline: r#"
        package portico:policy@0.2.0;

        interface policy {
            init: func(config: string) -> result<_, string>;
        }

        world policy-world {
            export policy;
        }
    "#,
});

struct Future;

impl exports::portico::policy::policy::Guest for Future {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

export!(Future);
