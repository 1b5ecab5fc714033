{{/*
Helpers of the chart labbuild exports. Generated; do not edit.
*/}}

{{/*
The image of a service: (list $ "name:tag" "repository path" "sha256:digest").
With global.imageRegistry = REGISTRY/PREFIX: REGISTRY/PREFIX/<repository path>@<digest>,
else name:tag@digest. The locked digest is always kept.
*/}}
{{- define "lab.image" -}}
{{- $registry := trimSuffix "/" (index . 0).Values.global.imageRegistry -}}
{{- if $registry -}}
{{- printf "%s/%s@%s" $registry (index . 2) (index . 3) -}}
{{- else -}}
{{- printf "%s@%s" (index . 1) (index . 3) -}}
{{- end -}}
{{- end -}}

{{/*
One generated secret value, base64: the existing Secret's value when there is one
(so upgrades keep it), else a new random one.
(dict "existing" (lookup ...) "key" KEY "generate" token|password|hex "length" N "prefix" P)
``length`` counts the random characters after the fixed ``prefix`` (LiteLLM demands sk-).
*/}}
{{- define "lab.secretValue" -}}
{{- $data := dig "data" dict (.existing | default dict) -}}
{{- if hasKey $data .key -}}
{{- index $data .key -}}
{{- else if eq .generate "hex" -}}
{{- $hex := "" -}}
{{- range until (int (div (add (int .length) 63) 64)) -}}
{{- $hex = print $hex (sha256sum (randAlphaNum 64)) -}}
{{- end -}}
{{- print (.prefix | default "") (trunc (int .length) $hex) | b64enc -}}
{{- else -}}
{{- print (.prefix | default "") (randAlphaNum (int .length)) | b64enc -}}
{{- end -}}
{{- end -}}

{{/* The name of a service's Secret: its existingSecret, else <service>-secrets. (list $ "service") */}}
{{- define "lab.secretName" -}}
{{- $svc := index (index . 0).Values.services (index . 1) -}}
{{- $svc.existingSecret | default (printf "%s-secrets" (index . 1)) -}}
{{- end -}}

{{/*
A service's resources: services.<svc>.resources, plus its gpus as nvidia.com/gpu requests
and limits when global.gpu is true (off by default, as `labbuild install --gpu` for compose).
A GPU count set by hand in resources wins. (list $ "service")
*/}}
{{- define "lab.resources" -}}
{{- $svc := index (index . 0).Values.services (index . 1) -}}
{{- $res := deepCopy ($svc.resources | default dict) -}}
{{- if and (index . 0).Values.global.gpu ($svc.gpus | default 0) -}}
{{- $gpu := dict "nvidia.com/gpu" $svc.gpus -}}
{{- $_ := set $res "limits" (merge (deepCopy ($res.limits | default dict)) $gpu) -}}
{{- $_ := set $res "requests" (merge (deepCopy ($res.requests | default dict)) $gpu) -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}
