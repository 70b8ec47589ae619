"""Permissive CRDs for the four kinds, from operator/api KINDS: any spec, a status subresource.
A stand-in until the generated CRDs (manifests/crds/) are on main; then apply those instead."""

from __future__ import annotations

import yaml

from capstan_operator.api import KINDS
from capstan_operator.api.common import GROUP, VERSION


def permissive_crds() -> str:
    docs = []
    for k in KINDS.values():
        open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        docs.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{k.plural}.{GROUP}"},
                "spec": {
                    "group": GROUP,
                    "scope": "Namespaced",
                    "names": {
                        "kind": k.kind,
                        "plural": k.plural,
                        "singular": k.kind.lower(),
                        "shortNames": list(k.short_names),
                        "categories": ["capstan"],
                    },
                    "versions": [
                        {
                            "name": VERSION,
                            "served": True,
                            "storage": True,
                            "subresources": {"status": {}},
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {"spec": open_object, "status": open_object},
                                }
                            },
                        }
                    ],
                },
            }
        )
    return yaml.safe_dump_all(docs)
