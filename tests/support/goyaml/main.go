// Reads an Authelia file-backend user database the way Authelia 4.39 does (yaml.Unmarshal into
// FileDatabaseModel, internal/authentication/file_user_provider_database.go; the model's fields
// and yaml tags are copied here) and prints what it read as JSON on stdout. Go's YAML reader is
// the consumer labbuild's writer must satisfy: gopkg.in/yaml.v3 here (Debian's
// golang-gopkg-yaml.v3-dev), the code go.yaml.in/yaml/v4 continues.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

type address struct {
	StreetAddress string `yaml:"street_address" json:"street_address"`
	Locality      string `yaml:"locality" json:"locality"`
	Region        string `yaml:"region" json:"region"`
	PostalCode    string `yaml:"postal_code" json:"postal_code"`
	Country       string `yaml:"country" json:"country"`
}

type user struct {
	Password       string         `yaml:"password" json:"password"`
	DisplayName    string         `yaml:"displayname" json:"displayname"`
	Email          string         `yaml:"email" json:"email"`
	Groups         []string       `yaml:"groups" json:"groups"`
	GivenName      string         `yaml:"given_name" json:"given_name"`
	MiddleName     string         `yaml:"middle_name" json:"middle_name"`
	FamilyName     string         `yaml:"family_name" json:"family_name"`
	Nickname       string         `yaml:"nickname" json:"nickname"`
	Gender         string         `yaml:"gender" json:"gender"`
	Birthdate      string         `yaml:"birthdate" json:"birthdate"`
	Website        string         `yaml:"website" json:"website"`
	Profile        string         `yaml:"profile" json:"profile"`
	Picture        string         `yaml:"picture" json:"picture"`
	ZoneInfo       string         `yaml:"zoneinfo" json:"zoneinfo"`
	Locale         string         `yaml:"locale" json:"locale"`
	PhoneNumber    string         `yaml:"phone_number" json:"phone_number"`
	PhoneExtension string         `yaml:"phone_extension" json:"phone_extension"`
	Disabled       bool           `yaml:"disabled" json:"disabled"`
	Address        *address       `yaml:"address" json:"address"`
	Extra          map[string]any `yaml:"extra" json:"extra"`
}

type database struct {
	Users map[string]user `yaml:"users" json:"users"`
}

func main() {
	content, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var db database
	if err = yaml.Unmarshal(content, &db); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := json.Marshal(db)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
