//! Exports `portico:policy/policy@0.1.0` with `init` only: the gateway must refuse it by
//! naming the function that is missing.

wit_bindgen::generate!({
    inline: r#"
        package portico:policy@0.1.0;

        interface types {
            flags needs {
                request-body,
                response-body,
                response-phase,
            }
        }

        interface policy {
            use types.{needs};
            init: func(config: string) -> result<needs, string>;
        }

        world policy-world {
            export policy;
        }
    "#,
});

struct InitOnly;

impl exports::portico::policy::policy::Guest for InitOnly {
    fn init(_config: String) -> Result<portico::policy::types::Needs, String> {
        Ok(portico::policy::types::Needs::empty())
    }
}

export!(InitOnly);
