package bridge

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/schema"
)

// ownedBy is the owner every model reports.
const ownedBy = "laas"

func (g *Gateway) modelObject(m schema.Model) schema.ModelObject {
	return schema.ModelObject{ID: m.Alias, Object: "model", Created: g.created, OwnedBy: ownedBy}
}

// listModels answers GET /v1/models with the configured aliases: for a
// virtual key, those it may call.
func (g *Gateway) listModels(c echo.Context) error {
	models := g.core.Catalog().Models()
	key := callerOf(c).Key
	list := schema.ModelList{Object: "list", Data: make([]schema.ModelObject, 0, len(models))}
	for _, m := range models {
		if key == nil || key.Allows(m.Alias) {
			list.Data = append(list.Data, g.modelObject(m))
		}
	}
	return c.JSON(http.StatusOK, list)
}

// getModel answers GET /v1/models/{id}; ids may contain slashes. A model a
// virtual key may not call does not exist for it (404, as OpenAI answers).
func (g *Gateway) getModel(c echo.Context) error {
	id := c.Param("*")
	m, ok := g.core.Catalog().Lookup(id)
	if key := callerOf(c).Key; !ok || key != nil && !key.Allows(m.Alias) {
		return schema.ModelNotFound(id)
	}
	return c.JSON(http.StatusOK, g.modelObject(m))
}
