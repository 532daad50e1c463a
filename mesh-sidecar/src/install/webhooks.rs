//! The admission webhooks' configurations: the mutating one that injects pods, and the
//! validating one that refuses invalid policy objects.

use super::*;

/// Two webhooks, because selectors see labels only and a review carries no namespace
/// metadata: one for namespaces labelled `mesh.io/inject=enabled` (path `/inject/enabled`:
/// inject unless the pod says disabled), one for every other namespace not disabled (path
/// `/inject`: inject only pods annotated enabled). Pods labelled disabled are never sent.
pub(super) fn webhook_configuration(namespace: &str, pki: &Pki) -> MutatingWebhookConfiguration {
    let expr = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.to_owned(),
        operator: op.to_owned(),
        values: Some(strings(values)),
    };
    let not_disabled = LabelSelector {
        match_expressions: Some(vec![expr(INJECT_ANNOTATION, "NotIn", &["disabled"])]),
        ..LabelSelector::default()
    };
    let webhook = |name: &str, path: &str, namespaces: LabelSelector| MutatingWebhook {
        name: name.to_owned(),
        admission_review_versions: strings(&["v1"]),
        client_config: injector_client_config(namespace, pki, path),
        // A down injector must not stop pods from starting; they start unmeshed.
        failure_policy: Some("Ignore".to_owned()),
        side_effects: "None".to_owned(),
        timeout_seconds: Some(10),
        reinvocation_policy: Some("Never".to_owned()),
        namespace_selector: Some(namespaces),
        object_selector: Some(not_disabled.clone()),
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(strings(&[""])),
            api_versions: Some(strings(&["v1"])),
            operations: Some(strings(&["CREATE"])),
            resources: Some(strings(&["pods"])),
            scope: Some("Namespaced".to_owned()),
        }]),
        ..MutatingWebhook::default()
    };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(format!("{INJECTOR}-{namespace}")),
            labels: Some(labels(INJECTOR)),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            webhook(
                "namespace.inject.mesh.io",
                "/inject/enabled",
                LabelSelector {
                    match_expressions: Some(vec![expr(INJECT_ANNOTATION, "In", &["enabled"])]),
                    ..LabelSelector::default()
                },
            ),
            webhook(
                "pod.inject.mesh.io",
                "/inject",
                LabelSelector {
                    match_expressions: Some(vec![
                        expr(INJECT_ANNOTATION, "NotIn", &["enabled", "disabled"]),
                        expr(
                            "kubernetes.io/metadata.name",
                            "NotIn",
                            &["kube-system", "kube-node-lease", namespace],
                        ),
                    ]),
                    ..LabelSelector::default()
                },
            ),
        ]),
    }
}

/// The injector's `/validate` for every policy kind that is a CRD, at each version a cluster
/// serves, on CREATE and UPDATE: `kubectl apply` refuses an invalid object with the words of
/// `mesh policy check`. `Ignore` and a short timeout, so a down injector never blocks a
/// cluster's policy changes (they are then only checked by the controller).
pub(super) fn validating_webhook_configuration(
    namespace: &str,
    pki: &Pki,
) -> ValidatingWebhookConfiguration {
    let rules = catalog::iter()
        .filter(|k| k.definition != Definition::BuiltIn)
        .map(|k| RuleWithOperations {
            api_groups: Some(strings(&[k.group])),
            api_versions: Some(k.served().map(|v| v.name.to_owned()).collect()),
            operations: Some(strings(&["CREATE", "UPDATE"])),
            // No `/status`: the controller's status writes on a refused object go through.
            resources: Some(strings(&[k.plural])),
            scope: Some("Namespaced".to_owned()),
        })
        .collect();
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(format!("{INJECTOR}-validate-{namespace}")),
            labels: Some(labels(INJECTOR)),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![ValidatingWebhook {
            name: "validate.policy.mesh.io".to_owned(),
            admission_review_versions: strings(&["v1"]),
            client_config: injector_client_config(namespace, pki, "/validate"),
            failure_policy: Some("Ignore".to_owned()),
            // Other versions of these kinds are converted to one listed here and sent too.
            match_policy: Some("Equivalent".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(5),
            rules: Some(rules),
            ..ValidatingWebhook::default()
        }]),
    }
}

/// Both webhooks call the injector's Service, verified by the install's webhook CA.
fn injector_client_config(namespace: &str, pki: &Pki, path: &str) -> WebhookClientConfig {
    WebhookClientConfig {
        ca_bundle: Some(ByteString(pki.webhook_ca.clone().into_bytes())),
        service: Some(ServiceReference {
            name: INJECTOR.to_owned(),
            namespace: namespace.to_owned(),
            path: Some(path.to_owned()),
            port: Some(443),
        }),
        ..WebhookClientConfig::default()
    }
}
