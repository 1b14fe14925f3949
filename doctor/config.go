package doctor

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/svid"
)

// configRow is the configuration row: the env file read, every key valid
// (config.Load's error), the files the agent checks before it starts
// (Config.CheckFiles), notices, and the effective values worth showing.
func configRow(cfg *config.Config, loadErr error) Result {
	r := Result{Name: RowConfig}
	if loadErr != nil {
		r.Status, r.Detail = Fail, joined(loadErr)
		r.Fix = configFix(loadErr, config.DefaultEnvFile)
		return r
	}
	file := "env file " + cfg.EnvFile
	if cfg.EnvFile == "" {
		file = "no env file (" + config.DefaultEnvFile + " absent or --env-file \"\"): defaults, environment and flags"
	}
	source, _, err := svid.Resolve(cfg.SPIFFESource, cfg.SpireAgentPath)
	spiffe := cfg.SPIFFESource + " (" + source + ")"
	if err != nil {
		spiffe = cfg.SPIFFESource + " (" + err.Error() + ")"
	}
	r.Status = OK
	r.Detail = fmt.Sprintf("%s; node %s, target %s; GATE=%s, SPIFFE_SOURCE=%s, IMS_AUTH=%s, LUN_REGISTRY=%s, TARGETCLI_MODE=%s",
		file, cfg.NodeName, cfg.TargetIQN, cfg.Gate, spiffe, cfg.IMSAuth, cfg.LUNRegistry, cfg.TargetcliMode)
	if err := cfg.CheckFiles(); err != nil {
		r.Status = Fail
		r.Detail = joined(err) + "; the agent refuses to start. " + r.Detail
		r.Fix = configFix(err, envFile(cfg))
		return r
	}
	if len(cfg.Notices) > 0 {
		r.Status = Warn
		r.Detail += "; " + strings.Join(cfg.Notices, "; ")
		r.Fix = "see the notices: " + strings.Join(noticeKeys(cfg.Notices), ", ") + " in " + envFile(cfg)
	}
	return r
}

// configFix names the keys an error names and where they are set; file
// is the env file the service reads.
func configFix(err error, file string) string {
	var keys []string
	var sources []string
	files := true // every error is a file the configuration names that is not there
	for _, e := range leaves(err) {
		var ce *config.Error
		files = files && errors.As(e, &ce) && ce.Source == "check"
	}
	for _, e := range leaves(err) {
		var ce *config.Error
		if errors.As(e, &ce) {
			if !slices.Contains(keys, config.EnvPrefix+ce.Key) {
				keys = append(keys, config.EnvPrefix+ce.Key)
			}
			if !slices.Contains(sources, ce.Source) && ce.Source != "check" && ce.Source != "combination" {
				sources = append(sources, ce.Source)
			}
		}
	}
	if len(keys) == 0 {
		var ef *config.EnvFileError
		if errors.As(err, &ef) {
			return ef.Fix
		}
		return "correct the configuration as the detail says; `sbps-marshal --help` lists every key"
	}
	if files {
		return fmt.Sprintf("create what %s name (their rows below say how), or point the keys at where it is in %s", strings.Join(keys, ", "), file)
	}
	where := file + " (the unit's EnvironmentFile), the environment or the flags"
	if len(sources) > 0 {
		where = strings.Join(sources, ", ")
	}
	return fmt.Sprintf("correct %s (set in %s) as the detail says; `sbps-marshal --help` lists every key with its default", strings.Join(keys, ", "), where)
}

// joined is err's messages on one line, the errors of an errors.Join
// separated by "; ".
func joined(err error) string {
	var msgs []string
	for _, e := range leaves(err) {
		msgs = append(msgs, errText(e))
	}
	return strings.Join(msgs, "; ")
}

// leaves flattens errors.Join trees.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}

// noticeKeys are the SBPS_MARSHAL_ keys the notices name.
func noticeKeys(notices []string) []string {
	var keys []string
	for _, n := range notices {
		k, _, _ := strings.Cut(n, " ")
		k, _, _ = strings.Cut(k, "=")
		if strings.HasPrefix(k, config.EnvPrefix) && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// envFile is where an operator sets a key for the service.
func envFile(cfg *config.Config) string {
	if cfg != nil && cfg.EnvFile != "" {
		return cfg.EnvFile
	}
	return config.DefaultEnvFile
}

// setKey is the fix "set SBPS_MARSHAL_<key>=<value> in <env file>".
func setKey(cfg *config.Config, key, value string) string {
	return fmt.Sprintf("set %s%s=%s in %s", config.EnvPrefix, key, value, envFile(cfg))
}
