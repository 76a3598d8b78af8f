//! The user data an instance boots with: the pool's template (or the built-in one) with its
//! placeholders replaced, so that the instance starts the pool's `drover-worker`.
//!
//! The placeholders are replaced by shell words, quoted where they need it:
//! `{coordinator}` (the address or addresses workers dial), `{pool}`, `{slots}`, `{labels}`
//! (the pool's labels joined by commas, maybe empty), `{spot}` (`true` for a spot pool, else
//! `false`), and `{token}`, which is not a word but shell lines: they put the worker token in a
//! file only root may read and export its path as `DROVER_WORKER_TOKEN_FILE` (a variable the
//! worker reads itself). Where the token comes from is the pool's choice: an SSM parameter,
//! fetched on the instance with the AWS CLI under its instance profile; a file already on the
//! instance; or, only when the user asks (`worker_token_in_user_data = true`), the user data
//! itself, which anyone allowed to describe the instance can read.

use crate::fleet::config::{Ec2Config, Market, PoolConfig, TokenSource};

/// Where a fetched (or written) token is kept on the instance.
pub const TOKEN_FILE: &str = "/etc/drover/worker-token";

/// EC2's limit on user data, before its base64.
pub const MAX_USER_DATA: usize = 16 * 1024;

/// The placeholders a template may hold.
pub const PLACEHOLDERS: [&str; 6] = [
    "{coordinator}",
    "{pool}",
    "{slots}",
    "{labels}",
    "{spot}",
    "{token}",
];

/// The template used when a pool gives none. The instance id (from the instance metadata,
/// IMDSv2) is the worker's machine id, by which the coordinator knows which of its instances a
/// worker runs on. The worker runs as a systemd unit of its own: its log is in the journal
/// (`journalctl -u drover-worker`), it is restarted if it fails, and a shutdown drains it.
/// The image needs `drover-worker` on its PATH, curl, and the AWS CLI for an SSM token.
pub const BUILT_IN: &str = r#"#!/bin/bash
# A worker of drover pool {pool}, started by the coordinator's ec2 provider.
set -euo pipefail
imds=http://169.254.169.254/latest
imds_token=$(curl -sSf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$imds/api/token")
machine_id=$(curl -sSf -H "X-aws-ec2-metadata-token: $imds_token" "$imds/meta-data/instance-id")
{token}
labels={labels}
systemd-run --unit=drover-worker --property=Restart=on-failure \
  --setenv=DROVER_SPOT_INTERRUPTIONS={spot} \
  drover-worker --coordinator {coordinator} --pool {pool} --slots {slots} \
  ${labels:+--label "$labels"} --machine-id "$machine_id" \
  --worker-token-file "$DROVER_WORKER_TOKEN_FILE"
"#;

/// The user data for one launch of `pool`'s instances, or why there is none: a token in user
/// data without a worker token, or a result above EC2's limit.
pub fn render(
    pool: &PoolConfig,
    ec2: &Ec2Config,
    coordinator: &str,
    worker_token: Option<&str>,
) -> Result<String, String> {
    let template = ec2.user_data.as_deref().unwrap_or(BUILT_IN);
    let spot = if ec2.market == Market::Spot {
        "true"
    } else {
        "false"
    };
    let rendered = template
        .replace("{coordinator}", &shell_word(coordinator))
        .replace("{pool}", &shell_word(&pool.name))
        .replace("{slots}", &pool.slots.to_string())
        .replace("{labels}", &shell_word(&pool.labels.join(",")))
        .replace("{spot}", spot)
        .replace("{token}", &token_lines(ec2, worker_token)?);
    if rendered.len() > MAX_USER_DATA {
        return Err(format!(
            "the user data is {} bytes, above EC2's limit of {MAX_USER_DATA}: shorten the \
             template",
            rendered.len()
        ));
    }
    Ok(rendered)
}

/// The shell lines that leave the token in a root-only file and export its path.
fn token_lines(ec2: &Ec2Config, worker_token: Option<&str>) -> Result<String, String> {
    let export = format!("export DROVER_WORKER_TOKEN_FILE={TOKEN_FILE}");
    let private_dir = "install -d -m 700 /etc/drover";
    Ok(match &ec2.token {
        TokenSource::File(path) => format!("export DROVER_WORKER_TOKEN_FILE={}", shell_word(path)),
        // The instance profile's credentials may take a moment after boot: a few tries.
        TokenSource::SsmParameter(name) => format!(
            "{private_dir}\n\
             for try in 1 2 3 4 5; do\n  \
               if (umask 077; aws ssm get-parameter --region {region} --name {name} \
             --with-decryption --query Parameter.Value --output text >{TOKEN_FILE}); then break; fi\n  \
               if [ \"$try\" = 5 ]; then echo \"cannot read the worker token from SSM parameter \"{name} >&2; exit 1; fi\n  \
               sleep 3\n\
             done\n\
             {export}",
            region = shell_word(&ec2.region),
            name = shell_word(name),
        ),
        TokenSource::InUserData => {
            let token = worker_token.ok_or(
                "worker_token_in_user_data is set but the coordinator has no worker token \
                 (DROVER_WORKER_TOKEN or --worker-token-file)",
            )?;
            format!(
                "{private_dir}\n\
                 (umask 077; printf '%s\\n' {token} >{TOKEN_FILE})\n\
                 {export}",
                token = shell_word(token)
            )
        }
    })
}

/// `text` as one shell word: as it is when it is plain, else in single quotes.
pub fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,:/@%+=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::config::ProviderConfig;
    use std::time::Duration;

    fn ec2(token: TokenSource, market: Market) -> Ec2Config {
        Ec2Config {
            region: "eu-west-1".into(),
            launch_template: None,
            image_id: Some("ami-1".into()),
            instance_type: Some("t3.micro".into()),
            subnet_id: None,
            security_group_ids: Vec::new(),
            instance_profile: None,
            market,
            user_data: None,
            token,
        }
    }

    fn pool(ec2: &Ec2Config, labels: &[&str]) -> PoolConfig {
        PoolConfig {
            name: "gpu".into(),
            min: 0,
            max: 2,
            slots: 4,
            labels: labels.iter().map(|label| label.to_string()).collect(),
            idle_timeout: Duration::from_secs(60),
            boot_timeout: Duration::from_secs(300),
            max_launches_per_minute: 10,
            provider: ProviderConfig::Ec2(Box::new(ec2.clone())),
        }
    }

    /// Runs the user data's shell up to the worker's start with `bash -n`: it parses.
    fn parses(script: &str) {
        let output = std::process::Command::new("bash")
            .args(["-n", "-c", script])
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "{}\n{script}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    fn the_built_in_template_starts_the_pools_worker_with_a_token_from_ssm() {
        let config = ec2(
            TokenSource::SsmParameter("/drover/worker token".into()),
            Market::Spot,
        );
        let data = render(
            &pool(&config, &["gpu", "ssd"]),
            &config,
            "10.0.0.5:7700",
            None,
        )
        .unwrap();
        assert!(data.starts_with("#!/bin/bash\n"));
        assert!(data.contains(
            "drover-worker --coordinator 10.0.0.5:7700 --pool gpu --slots 4 \\\n  \
             ${labels:+--label \"$labels\"} --machine-id \"$machine_id\""
        ));
        assert!(data.contains("labels=gpu,ssd\n"));
        assert!(data.contains("--setenv=DROVER_SPOT_INTERRUPTIONS=true"));
        assert!(data.contains(
            "aws ssm get-parameter --region eu-west-1 --name '/drover/worker token' \
             --with-decryption"
        ));
        assert!(data.contains("umask 077"));
        assert!(data.contains("export DROVER_WORKER_TOKEN_FILE=/etc/drover/worker-token"));
        assert!(!PLACEHOLDERS
            .iter()
            .any(|placeholder| data.contains(placeholder)));
        parses(&data);
    }

    #[test]
    fn the_token_is_in_user_data_only_when_asked() {
        let from_file = ec2(TokenSource::File("/opt/token".into()), Market::OnDemand);
        let data = render(&pool(&from_file, &[]), &from_file, "h:1", Some("s3cret")).unwrap();
        assert!(!data.contains("s3cret"), "{data}");
        assert!(data.contains("export DROVER_WORKER_TOKEN_FILE=/opt/token"));
        assert!(data.contains("DROVER_SPOT_INTERRUPTIONS=false"));
        assert!(data.contains("labels=''\n"));
        parses(&data);

        let inline = ec2(TokenSource::InUserData, Market::OnDemand);
        let data = render(&pool(&inline, &[]), &inline, "h:1", Some("it's")).unwrap();
        assert!(data.contains(r"(umask 077; printf '%s\n' 'it'\''s' >/etc/drover/worker-token)"));
        parses(&data);
        let refused = render(&pool(&inline, &[]), &inline, "h:1", None).unwrap_err();
        assert!(refused.contains("no worker token"), "{refused}");
    }

    #[test]
    fn a_users_template_gets_its_placeholders_replaced_and_its_size_checked() {
        let mut config = ec2(TokenSource::File("/t".into()), Market::OnDemand);
        config.user_data = Some(
            "#!/bin/sh\n{token}\nexec drover-worker --coordinator {coordinator} --pool {pool} \
             --slots {slots} --label {labels} ${HOME}\n"
                .into(),
        );
        let data = render(&pool(&config, &["a b"]), &config, "h:1,g:2", None).unwrap();
        assert_eq!(
            data,
            "#!/bin/sh\nexport DROVER_WORKER_TOKEN_FILE=/t\nexec drover-worker --coordinator \
             h:1,g:2 --pool gpu --slots 4 --label 'a b' ${HOME}\n"
        );
        config.user_data = Some(format!("drover-worker {}", "#".repeat(MAX_USER_DATA)));
        let refused = render(&pool(&config, &[]), &config, "h:1", None).unwrap_err();
        assert!(refused.contains("above EC2's limit of 16384"), "{refused}");
    }

    #[test]
    fn shell_words_are_quoted_only_when_they_need_it() {
        assert_eq!(shell_word("a-b_c.d:7700"), "a-b_c.d:7700");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("$(x)'"), r"'$(x)'\'''");
    }
}
